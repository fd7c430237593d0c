"""Pure maths on tensors and arrays, no model and no workbench: the PQ Index and the SAP rule (Diao et al.
2023), column-pivoted QR / TSQR and the interpolative decomposition (Chee et al. 2021), the CoSaMP-style i-SpaSP
iteration (Wolfe & Kyrillidis 2022), the OBS / SparseGPT layer solver and Algorithm 1's steps (Wu et al. 2024),
block sparsity with its softmax attention and schedule (Yasuda et al. 2024), Lanczos, stochastic Lanczos
quadrature and Hutchinson's trace (for Zhang et al. 2024's limit). The methods in ``methods/`` apply them to a
model."""
