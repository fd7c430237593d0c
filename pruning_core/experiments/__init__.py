"""Long reproductions of the papers' experiments: the SAP retraining loop (``sap``), the synthetic two-layer
networks of i-SpaSP (``two_layer``), PQI along a one-shot magnitude sweep (``pqi_curve``), and the one training
loop they and the demo models use (``training``).

Long runs take two optional callbacks: ``progress(fraction, text)`` and ``should_stop()``, polled between steps;
a run that stops returns (or keeps) what it has finished.
"""

from typing import Callable

Progress = Callable[[float, str], None] | None
ShouldStop = Callable[[], bool] | None
