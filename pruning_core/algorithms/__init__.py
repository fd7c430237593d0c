"""Pure maths on tensors and arrays, no model and no workbench: the PQ Index and the SAP rule (Diao et al.
2023), column-pivoted QR / TSQR and the interpolative decomposition (Chee et al. 2021), the CoSaMP-style i-SpaSP
iteration (Wolfe & Kyrillidis 2022). The methods in ``methods/`` apply them to a model."""
