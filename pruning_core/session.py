"""Opening a workbench on a loaded model and dataset: the one place the app and the command line check that
they fit together before anything is evaluated."""

from __future__ import annotations

import torch

from .data import DataError, DataSplits
from .loading import LoadedModel
from .workbench import Workbench


def _shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def open_workbench(loaded: LoadedModel, data: DataSplits, device: str | torch.device | None = None,
                   bundled_data: bool = False) -> Workbench:
    """A workbench for ``loaded`` on ``data``, its dense reference computed. Raises ``DataError`` with a message
    for the person when the model's input shape and the data's samples differ (``bundled_data``: the data is the
    bundled digits, and the message says what to upload instead), or when a forward pass on the data fails."""
    if loaded.input_shape and tuple(loaded.input_shape) != tuple(data.sample_shape):
        hint = (" The bundled digits only fit the digits models; upload an .npz whose X has shape "
                f"(N, {', '.join(map(str, loaded.input_shape))}) and load again." if bundled_data else "")
        raise DataError(f"{loaded.name} expects inputs of shape {_shape(loaded.input_shape)}, but the samples of "
                        f"{data.name} have shape {_shape(data.sample_shape)}.{hint}")
    wb = Workbench(loaded.model, data, device=device, name=loaded.name)  # raises DataError when they do not fit
    wb.dense_metrics()
    return wb


__all__ = ["open_workbench"]
