"""This browser session's state, typed: one ``ExplorerState`` kept in ``st.session_state`` under ``STATE_KEY``.

What a reader needs to know:
  * The router (``app.py``) gives a new session the demo; a page reached before that is sent to the router.
  * The session owns one ``Workbench`` (it deep-copies the cached dense model once). It is replaced only after
    a new model + data pair has been fully checked (``pruning_core.session.open_workbench``); ``key`` names
    the pair, and sweeps, prepared methods and exports belong to the pair they were made on.
  * Sweeps are ``SweepRecord``s per workbench key, points appended as they arrive, so an interrupted sweep
    keeps what it measured.
  * ``choice`` is the plan (method, ratio) the Layers, Sparsity and Export screens default to; the Sweep
    screen's ratio slider and plan picker set it.
  * Widget values that only a page uses (its pickers and fields) stay in plain session-state keys, the
    widgets' own (see ``widgets.keep``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from pruning_core import DataSplits, SweepResult, Workbench, make_method
from pruning_core import session as engine_session
from pruning_core.export import ExportBundle
from pruning_core.limit import Curvature
from pruning_core.loading import LoadedModel
from pruning_core.methods import Method
from pruning_core.recipes import RecipeError, WorkbenchRecipe
from pruning_core.sweep import SweepPoint

from .sources import DEMO_MODEL, DataSource, ModelSource

STATE_KEY = "explorer"
# the Methods and Sparsity screens still read the workbench key under this plain name
WORKBENCH_KEY = "wb_key"
DEFAULT_RATIO = 0.5
SWEEP_FIGURES_KEPT = 48  # per sweep: both Sweep charts at 24 ratio-and-choice combinations


@dataclass(frozen=True)
class ModelInfo:
    name: str
    kind: str  # how it was loaded: pruning_core.loading.KINDS
    architecture: str | None  # a key of pruning_core.models.ARCHITECTURES, when known
    notes: tuple[str, ...]
    identity: str

    @classmethod
    def of(cls, loaded: LoadedModel, identity: str) -> ModelInfo:
        return cls(loaded.name, loaded.kind, loaded.architecture, tuple(loaded.notes), identity)


@dataclass(frozen=True)
class DataInfo:
    name: str
    train: int
    calibration: int
    evaluation: int
    sample_shape: tuple[int, ...]
    classes: int
    identity: str
    labelled: bool = True
    note: str = ""  # what figures on this data mean (unlabelled sets say they compare with the dense model)

    @classmethod
    def of(cls, data: DataSplits, identity: str) -> DataInfo:
        d = data.describe()
        return cls(d["name"], d["train"], d["calibration"], d["evaluation"], tuple(d["sample_shape"]),
                   d["classes"], identity, bool(d.get("labelled", True)), str(d.get("note", "")))


@dataclass(frozen=True)
class SweepSettings:
    methods: tuple[str, ...]
    ratios: tuple[float, ...]
    structured: str  # "sliced" or "masked"


@dataclass
class SweepRecord:
    """One sweep of a workbench: its settings, the points measured so far, and what is drawn from them.
    ``meta`` (model, data, device, dense accuracy, ...) travels with the results."""

    settings: SweepSettings
    meta: dict
    points: list[SweepPoint] = field(default_factory=list)
    finished: bool = False
    _result: tuple[int, SweepResult] | None = field(default=None, repr=False)
    _figures: tuple[int, dict] = field(default_factory=lambda: (-1, {}), repr=False)

    @property
    def planned(self) -> int:
        return len(self.settings.methods) * len(self.settings.ratios)

    def result(self) -> SweepResult:
        """The points as frames, built once per new point rather than on every slider move."""
        if self._result is None or self._result[0] != len(self.points):
            # in the sweep's own order (method by method, ratios as listed) however they arrived: a Ray cluster
            # delivers points as they finish
            order = {(m, float(r)): i for i, (m, r) in enumerate(
                (m, r) for m in self.settings.methods for r in self.settings.ratios)}
            points = sorted(self.points, key=lambda p: order.get((p.row["method"], float(p.row["ratio"])),
                                                                  len(order)))
            self._result = (len(self.points), SweepResult.from_points(points, self.meta))
        return self._result[1]

    def figure(self, key: tuple, build: Callable[[], Any]):
        """A figure of this sweep built once per ``key`` (the chart, the ratio and the choices it shows), so
        that scrubbing back to a ratio builds nothing; rebuilt when new points arrive, the oldest dropped
        beyond ``SWEEP_FIGURES_KEPT``. ``build()`` makes it; reruns share it and never change it."""
        n, figures = self._figures
        if n != len(self.points):
            self._figures = n, figures = len(self.points), {}
        if key not in figures:
            if len(figures) >= SWEEP_FIGURES_KEPT:
                figures.pop(next(iter(figures)))
            figures[key] = build()
        return figures[key]


@dataclass(frozen=True)
class ExportRecord:
    workbench_key: str
    bundle: ExportBundle
    file_name: str


@dataclass
class Choice:
    """The plan the other screens default to; ``method`` None until one is picked."""

    method: str | None = None
    ratio: float = DEFAULT_RATIO


@dataclass
class ExplorerState:
    workbench: Workbench
    key: str  # "<model identity>|<data identity>"
    model: ModelInfo
    data: DataInfo
    prepared: dict[str, Method] = field(default_factory=dict)  # this workbench's methods, by key
    sweeps: dict[str, SweepRecord] = field(default_factory=dict)  # by workbench key
    choice: Choice = field(default_factory=Choice)
    export: ExportRecord | None = None
    # the predicted limit's Hessian spectrum and trace, by (workbench key, probes, Lanczos steps)
    limits: dict[tuple, Curvature] = field(default_factory=dict)
    # channel scores by (workbench key, criterion); sensitivity tables by (workbench key, criterion, split, ratios);
    # fine-tuning recoveries by workbench key (records in explorer_ui.insight)
    scores: dict[tuple, dict] = field(default_factory=dict)
    sensitivities: dict[tuple, Any] = field(default_factory=dict)
    recoveries: dict[str, Any] = field(default_factory=dict)
    attributions: dict[tuple, tuple] = field(default_factory=dict)  # by (workbench key, evaluation sample)
    # how a Ray worker builds this workbench again (None: it cannot, ``recipe_note`` says why)
    recipe: WorkbenchRecipe | None = None
    recipe_note: str = ""

    @property
    def sweep(self) -> SweepRecord | None:
        """This workbench's sweep, if one was run (or started)."""
        return self.sweeps.get(self.key)

    def method(self, key: str) -> Method:
        """The method ``key`` prepared on this workbench (its ratio-independent work done once)."""
        if key not in self.prepared:
            self.prepared[key] = make_method(key).prepare(self.workbench)
        return self.prepared[key]

    def choose(self, method: str | None = None, ratio: float | None = None) -> None:
        if method is not None:
            self.choice.method = method
        if ratio is not None:
            self.choice.ratio = float(ratio)

    def install(self, wb: Workbench, key: str, model: ModelInfo, data: DataInfo) -> None:
        """Make ``wb`` this session's workbench; its sweeps, if it had any before, come back with it."""
        self.workbench, self.key, self.model, self.data = wb, key, model, data
        self.prepared = {}
        self.recipe, self.recipe_note = None, "this workbench was not loaded from a model and data source"


def has_state() -> bool:
    return STATE_KEY in st.session_state


def state() -> ExplorerState:
    """This session's state (the router sets it up; pages call ``require_session`` first)."""
    return st.session_state[STATE_KEY]


def workbench() -> Workbench:
    return state().workbench


def open_workbench(model_src: ModelSource, data_src: DataSource) -> ExplorerState:
    """Load, check and install a new model + data pair as this session's workbench.

    Raises ModelLoadError or DataError with a message for the person; on any error the session keeps the
    workbench it had.
    """
    loaded, data = model_src.load(), data_src.load()
    wb = engine_session.open_workbench(loaded, data, bundled_data=data_src.bundled)
    s = install_workbench(wb, f"{model_src.identity}|{data_src.identity}", ModelInfo.of(loaded, model_src.identity),
                          DataInfo.of(data, data_src.identity))
    try:
        s.recipe, s.recipe_note = WorkbenchRecipe(model_src.recipe(), data_src.recipe(), name=loaded.name), ""
    except RecipeError as e:
        s.recipe, s.recipe_note = None, str(e)
    return s


def install_workbench(wb: Workbench, key: str, model: ModelInfo, data: DataInfo, session=None) -> ExplorerState:
    """Make ``wb`` (checked already) this session's workbench, creating the session's state if needed.
    ``session``: the session state to install into (an AppTest's), by default this run's."""
    ss = st.session_state if session is None else session
    if STATE_KEY in ss:
        ss[STATE_KEY].install(wb, key, model, data)
    else:
        ss[STATE_KEY] = ExplorerState(wb, key, model, data)
    ss[WORKBENCH_KEY] = key
    return ss[STATE_KEY]


def ensure_session() -> None:
    """Give a new browser session the demo: digits-resnet on the bundled digits."""
    if not has_state():
        open_workbench(ModelSource(builtin=DEMO_MODEL), DataSource())


def require_session() -> None:
    """First line of every page. Right after the server starts, and until some session has run ``app.py``,
    Streamlit still treats ``pages/`` as a legacy page folder, so a first visit straight to a page URL (a
    bookmark of /sweep) runs that page without the router. Send such a visit through the router."""
    if not has_state():
        st.switch_page("app.py")
