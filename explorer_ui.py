"""UI-side glue shared by ``app.py`` and the screens in ``pages/``: caches, the session's workbench, sweep
results in session state, persistent widget values, error display. No tensor math here either: every number
comes from ``pruning_core``.

State model (what a reader needs to know):
  * Dense models and datasets are cached once per process with ``st.cache_resource``, keyed by an explicit
    identity (built-in name, or the sha1 of the uploaded bytes), and never mutated.
  * Each browser session owns one ``Workbench`` (it deep-copies the cached model once) in
    ``st.session_state["wb"]``. It is replaced only after a new model + data pair has been fully validated.
  * Sweep results are plain ``SweepPoint`` rows per workbench identity, appended as they arrive, so an
    interrupted sweep keeps what it measured.
  * ``choice_method`` / ``choice_ratio`` are the plan the Layers and Export screens default to; the Sweep
    screen's ratio slider and method picker set them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import streamlit as st

from pruning_core import (REGISTRY, DataError, DataSplits, GroupError, Plan, PlanError, SweepResult, Workbench,
                          check_ratio, load_digits, load_npz, make_method, sweep)
from pruning_core import session
from pruning_core.export import ExportError
from pruning_core.loading import LoadedModel, ModelLoadError, load_builtin_model, load_model_file
from pruning_core.methods import Method
from pruning_core.models import ARCHITECTURES

DEMO_MODEL = "digits-resnet"
DIGITS_ID = "bundled:digits"
DEFAULT_RATIO = 0.5
_log = logging.getLogger(__name__)

# ----- caches: one dense object per identity, shared read-only by every session ------------------------------


@st.cache_resource(show_spinner="Loading the built-in model…", max_entries=8)
def builtin_model(name: str) -> LoadedModel:
    return load_builtin_model(name)


@st.cache_resource(show_spinner="Reading the uploaded model…", max_entries=4)
def _uploaded_model(digest: str, filename: str, architecture: str | None, trust_pickle: bool,
                    _data: bytes) -> LoadedModel:
    return load_model_file(_data, filename, architecture=architecture, trust_pickle=trust_pickle)


@st.cache_resource(show_spinner="Loading the digits…")
def bundled_digits() -> DataSplits:
    return load_digits()


@st.cache_resource(show_spinner="Reading the uploaded dataset…", max_entries=4)
def _uploaded_data(digest: str, name: str, _data: bytes) -> DataSplits:
    return load_npz(_data, name)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


# ----- what the person picked, before it is loaded ---------------------------------------------------------

ARCHITECTURE_CHOICES = list(ARCHITECTURES)


def architecture_title(name: str) -> str:
    arch = ARCHITECTURES[name]
    return arch.title if arch.weights else f"{arch.title} · random init, no trained weights"



@dataclass(frozen=True)
class ModelSource:
    """A built-in name, or uploaded bytes with the options they are read with."""

    builtin: str | None = None
    data: bytes | None = field(default=None, repr=False)
    filename: str = ""
    architecture: str | None = None
    trust_pickle: bool = False

    @property
    def identity(self) -> str:
        if self.builtin is not None:
            return f"builtin:{self.builtin}"
        return f"file:{sha1(self.data)}:{self.filename}:{self.architecture}:{self.trust_pickle}"

    def load(self) -> LoadedModel:
        if self.builtin is not None:
            return builtin_model(self.builtin)
        return _uploaded_model(sha1(self.data), self.filename, self.architecture, self.trust_pickle, _data=self.data)


@dataclass(frozen=True)
class DataSource:
    data: bytes | None = field(default=None, repr=False)  # None: the bundled digits
    filename: str = ""

    @property
    def identity(self) -> str:
        return DIGITS_ID if self.data is None else f"npz:{sha1(self.data)}"

    def load(self) -> DataSplits:
        if self.data is None:
            return bundled_digits()
        return _uploaded_data(sha1(self.data), self.filename, _data=self.data)


# ----- uploads the browser refuses -------------------------------------------------------------------------
# Streamlit's uploader checks a file's size (server.maxUploadSize) and type in the browser. A refused file is
# never sent: the server sees no change at all (no rerun), and in single-file mode the uploader keeps the file
# it had, so Load would quietly use that earlier file. A small script mounted on the page watches the
# uploaders' file inputs and drops, and reports a refused file (its name, size and why) to the server, which
# then clears that uploader (a new widget key) and says what was refused.

_UPLOAD_WATCH_JS = """
export default function(component) {
  const { data, setTriggerValue } = component;
  const fieldOf = (target) => {
    const box = target && target.closest ? target.closest('[class*="st-key-"]') : null;
    if (!box) return null;
    for (const [field, spec] of Object.entries(data.fields)) {
      const cls = 'st-key-' + spec.key;
      if ([...box.classList].some((c) => c === cls || c.startsWith(cls + '_'))) return [field, spec];
    }
    return null;
  };
  const check = (event, files) => {
    const found = fieldOf(event.target);
    if (!found || !files) return;
    const [field, spec] = found;
    for (const f of files) {
      const name = String(f.name || '').slice(0, 200);
      const lower = name.toLowerCase();
      let reason = null;
      if (f.size > data.limit) reason = 'size';
      else if (spec.types.length && !spec.types.some((t) => lower.endsWith(t))) reason = 'type';
      if (reason) {
        setTriggerValue('refused', { field, name, size: f.size, reason });
        return;
      }
    }
  };
  const onChange = (e) => { if (e.target && e.target.type === 'file') check(e, e.target.files); };
  const onDrop = (e) => check(e, e.dataTransfer && e.dataTransfer.files);
  if (window.__pruningExplorerUploadWatch) window.__pruningExplorerUploadWatch();
  document.addEventListener('change', onChange, true);
  document.addEventListener('drop', onDrop, true);
  const stop = () => {
    document.removeEventListener('change', onChange, true);
    document.removeEventListener('drop', onDrop, true);
    if (window.__pruningExplorerUploadWatch === stop) delete window.__pruningExplorerUploadWatch;
  };
  window.__pruningExplorerUploadWatch = stop;
  return stop;
}
"""
_upload_watch = st.components.v2.component("pruning_explorer.upload_watch", js=_UPLOAD_WATCH_JS)
_REFUSED = "upload_refused"  # session key: {field: RefusedUpload}
# the Model & data page's uploaders: {field: (widget key, accepted extensions)}
MODEL_DATA_UPLOADERS = {"model": ("md_model_file", ()), "data": ("md_data_file", (".npz",))}


def upload_limit_mb() -> int:
    """The per-file upload limit in MB (``server.maxUploadSize``), enforced by the browser and the server."""
    return int(st.get_option("server.maxUploadSize"))


def fmt_bytes(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def plain(name: str, limit: int = 120) -> str:
    """A name from the person's machine (an uploaded file's) made safe to show in Streamlit markdown: control
    characters removed, markdown punctuation escaped (no links, images or emphasis), shortened."""
    text = "".join(c for c in str(name) if c.isprintable())
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return "".join("\\" + c if c in "\\`*_{}[]()<>#+-.!|~:$&" else c for c in text)


@dataclass(frozen=True)
class RefusedUpload:
    """A file the browser would not upload: it never reached the app."""

    field: str  # "model" or "data"
    name: str
    size: int
    reason: str  # "size" or "type"
    types: tuple[str, ...] = ()

    def message(self) -> str:
        what = f"**{plain(self.name)}** ({fmt_bytes(self.size)})"
        if self.reason == "type":
            return (f"{what} was refused: only {', '.join(self.types)} files are accepted here, so it was not "
                    "uploaded and nothing was loaded from it.")
        return (f"{what} was refused: it is larger than the upload limit of {upload_limit_mb()} MB per file, so "
                "it was not uploaded and nothing was loaded from it. To allow larger files, start the app with "
                "`--server.maxUploadSize <MB>` (for example `bash scripts/run_app.sh --server.maxUploadSize "
                "1000`) or set `maxUploadSize` under `[server]` in `.streamlit/config.toml`.")


def uploader_key(base: str) -> str:
    """The current widget key of the uploader ``base``; it changes each time a refused file clears it."""
    generation = st.session_state.get(f"{base}__generation", 0)
    return base if not generation else f"{base}_{generation}"


def refused_upload(field: str) -> RefusedUpload | None:
    return st.session_state.get(_REFUSED, {}).get(field)


def forget_refused(field: str | None = None) -> None:
    """Drop the note of a refused file (of one uploader, or all): a new file arrived, or a Load succeeded."""
    refused = st.session_state.get(_REFUSED, {})
    if field is None:
        refused.clear()
    else:
        refused.pop(field, None)


def note_refused(state, uploaders: dict[str, tuple[str, tuple[str, ...]]], value) -> RefusedUpload | None:
    """Note a refused file as the browser reported it (``{"field", "name", "size", "reason"}``, checked: it
    comes from the browser) in ``state`` (the session state), and give its uploader a new, empty widget."""
    if not isinstance(value, dict) or value.get("field") not in uploaders:
        return None
    field = value["field"]
    base, types = uploaders[field]
    size = value.get("size")
    refused = RefusedUpload(field, str(value.get("name", ""))[:200],
                            size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0,
                            "type" if value.get("reason") == "type" else "size", tuple(types))
    notes = state[_REFUSED] if _REFUSED in state else {}
    notes[field] = refused
    state[_REFUSED] = notes
    generation = f"{base}__generation"
    state[generation] = (state[generation] if generation in state else 0) + 1
    return refused


def watch_uploads(uploaders: dict[str, tuple[str, tuple[str, ...]]], key: str = "upload_watch") -> None:
    """Mount the watcher for ``{field: (uploader base key, accepted extensions like ".npz")}``. A refused file
    is noted under its field and its uploader is replaced by an empty one, so Load cannot pick up the file
    that uploader held before."""
    def on_refused() -> None:
        note_refused(st.session_state, uploaders, (st.session_state.get(key) or {}).get("refused"))

    _upload_watch(key=key, data={"limit": upload_limit_mb() * 1024 * 1024,
                                 "fields": {f: {"key": base, "types": [t.lower() for t in types]}
                                            for f, (base, types) in uploaders.items()}},
                  on_refused_change=on_refused)


def open_workbench(model_src: ModelSource, data_src: DataSource) -> None:
    """Load, validate and install a new model + data pair as this session's workbench.

    Raises ModelLoadError or DataError with a message for the person; on any error the session keeps the
    workbench it had.
    """
    loaded = model_src.load()
    data = data_src.load()
    wb = session.open_workbench(loaded, data, bundled_data=data_src.data is None)  # the CLI's checks too
    ss = st.session_state
    ss["wb"], ss["wb_key"] = wb, f"{model_src.identity}|{data_src.identity}"
    ss["model_info"] = {"name": loaded.name, "kind": loaded.kind, "architecture": loaded.architecture,
                        "notes": list(loaded.notes), "identity": model_src.identity}
    ss["data_info"] = {**data.describe(), "identity": data_src.identity}
    ss["prepared"] = {}
    ss.setdefault("sweeps", {})


def ensure_session() -> None:
    """Give a new browser session the demo: digits-resnet on the bundled digits."""
    if "wb" not in st.session_state:
        open_workbench(ModelSource(builtin=DEMO_MODEL), DataSource())
    st.session_state.setdefault("choice_ratio", DEFAULT_RATIO)


def require_session() -> None:
    """First line of every page. Right after the server starts, and until some session has run ``app.py``,
    Streamlit still treats ``pages/`` as a legacy page folder, so a first visit straight to a page URL (a
    bookmark of /sweep) runs that page without the router. Send such a visit through the router."""
    if "wb" not in st.session_state:
        st.switch_page("app.py")


def workbench() -> Workbench:
    return st.session_state["wb"]


def show_error(error: Exception, what: str = "") -> None:
    """A message the person can act on. Our own errors carry one; anything else is named plainly."""
    prefix = f"{what}: " if what else ""
    if isinstance(error, (ModelLoadError, DataError, GroupError, PlanError, ExportError)):
        st.error(f"{prefix}{error}", icon="⚠️")
    else:  # a defect, or a library failing on an unusual model: say so, and keep the traceback in the log
        _log.error("unexpected error shown to the user", exc_info=error)
        st.error(f"{prefix}unexpected {type(error).__name__}: {error}", icon="⚠️")


# ----- methods and plans -----------------------------------------------------------------------------------


def available_methods(wb: Workbench) -> list[str]:
    """Registry keys usable on this model: structured ones only when it has channel groups, unit methods
    (ID, i-SpaSP) only when it has two-layer units: what each spec's ``unavailable`` says."""
    return [k for k, s in REGISTRY.items() if s.unavailable(wb) is None]


def method_label(key: str) -> str:
    return REGISTRY[key].label if key in REGISTRY else key


def structured_note(wb: Workbench) -> str | None:
    """Why structured methods are unavailable, or None when they are available."""
    try:
        wb.groups
        return None
    except GroupError as e:
        return f"Structured (channel) methods are unavailable for this model: {e}"


def prepared(key: str) -> Method:
    """The method ``key`` prepared on this session's workbench (ratio-independent work done once)."""
    cache = st.session_state.setdefault("prepared", {})
    if key not in cache:
        cache[key] = make_method(key).prepare(workbench())
    return cache[key]


def plan_for(key: str, ratio: float) -> Plan:
    return prepared(key).plan(ratio)


def choice() -> tuple[str, float]:
    """The (method, ratio) Layers and Export default to, valid for the current model."""
    methods = available_methods(workbench())
    method = st.session_state.get("choice_method")
    if method not in methods:
        method = "group-l1" if "group-l1" in methods else methods[0]
    return method, float(st.session_state.get("choice_ratio", DEFAULT_RATIO))


# ----- widgets whose values survive page switches -----------------------------------------------------------


def keep(key: str, default, options=None, on_change=None) -> dict:
    """Widget kwargs for a value that survives page switches (Streamlit drops a widget's own key when the
    widget is not drawn): the value lives under ``key``, the widget under ``_key``, copied both ways.
    ``options`` clamps a stale value (a method this model lacks, a ratio no longer swept) to ``default``."""
    ss = st.session_state
    value = ss.get(key, default)
    if options is not None:
        if isinstance(value, list):
            value = [v for v in value if v in options]
        elif value not in options:
            value = default
    ss[key] = value
    ss["_" + key] = value

    def store() -> None:
        ss[key] = ss["_" + key]
        if on_change is not None:
            on_change()

    return {"key": "_" + key, "on_change": store}


def plan_picker() -> tuple[str, float]:
    """Method and ratio pickers shared by Layers and Export; they start from the Sweep page's choice and
    changing them changes it for the other pages too."""
    methods = available_methods(workbench())
    method, ratio = choice()
    st.session_state["choice_ratio"] = ratio = min(max(ratio, 0.0), 0.99)  # within the slider's range
    left, right = st.columns(2)
    method = left.selectbox("Method", methods, format_func=method_label,
                            **keep("choice_method", method, options=methods))
    ratio = right.slider("Ratio (fraction removed)", 0.0, 0.99, step=0.01, **keep("choice_ratio", ratio))
    return method, float(ratio)


def parse_ratios(text: str) -> list[float]:
    """A comma (or space) separated list of ratios, each validated, rounded to 4 decimals, sorted and with repeats
    merged; raises PlanError with the reason, also for more ratios than one sweep may have (counted first)."""
    from pruning_core.limits import max_ratios, too_many_ratios

    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        raise PlanError("Enter at least one ratio, for example 0, 0.3, 0.5, 0.7, 0.9.")
    if len(parts) > max_ratios():
        raise PlanError(too_many_ratios(len(parts)))
    # checked again after rounding: 0.99996 rounds to 1
    return sorted({check_ratio(round(check_ratio(p.strip()), 4)) for p in parts})


# ----- sweeps ----------------------------------------------------------------------------------------------


def current_sweep() -> dict | None:
    """This workbench's sweep record: {"points": [SweepPoint], "planned": int, "settings": dict, ...}."""
    return st.session_state.get("sweeps", {}).get(st.session_state.get("wb_key"))


def sweep_result(record: dict) -> SweepResult:
    """The record's points as frames, built once per new point rather than on every slider move."""
    cached = record.get("result")
    if cached is None or cached[0] != len(record["points"]):
        record["result"] = (len(record["points"]), SweepResult.from_points(record["points"], record.get("meta")))
    return record["result"][1]


SWEEP_FIGURES_KEPT = 48  # per sweep: both Sweep charts at 24 ratio-and-choice combinations


def sweep_figure(record: dict, key: tuple, build):
    """A figure of this sweep record built once per ``key`` (the chart, the ratio and the choices it shows)
    and kept with the record, so that scrubbing back to a ratio builds nothing; rebuilt when new points
    arrive, the oldest dropped beyond ``SWEEP_FIGURES_KEPT``. ``build()`` makes the figure; the figures are
    shared by later reruns and never changed."""
    n, figures = record.get("figures", (None, {}))
    if n != len(record["points"]):
        n, figures = len(record["points"]), {}
        record["figures"] = (n, figures)
    if key not in figures:
        if len(figures) >= SWEEP_FIGURES_KEPT:
            figures.pop(next(iter(figures)))
        figures[key] = build()
    return figures[key]


def run_sweep_live(methods: list[str], ratios: list[float], structured: str) -> dict:
    """Run a sweep with a progress bar, appending every point to session state as soon as it is measured, so
    that leaving the page (or pressing anything) mid-sweep keeps the points already measured."""
    wb = workbench()
    record = {"points": [], "planned": len(methods) * len(ratios), "settings":
              {"methods": methods, "ratios": ratios, "structured": structured}, "finished": False,
              "meta": {"model": wb.name, "data": wb.data.name, "device": str(wb.device),
                       "structured_evaluation": structured, "dense_accuracy": wb.dense_metrics().accuracy}}
    st.session_state.setdefault("sweeps", {})[st.session_state["wb_key"]] = record
    start = time.perf_counter()
    with st.status(f"Sweeping {len(methods)} method(s) x {len(ratios)} ratio(s)…", expanded=True) as status:
        bar = st.progress(0.0, text="Preparing…")

        def on_prepare(key: str) -> None:
            bar.progress(len(record["points"]) / record["planned"], text=f"Preparing {method_label(key)}…")

        for point in sweep(wb, [prepared(m) for m in methods], ratios, structured, on_prepare=on_prepare):
            record["points"].append(point)
            done = len(record["points"])
            bar.progress(done / record["planned"], text=f"{done}/{record['planned']}: {point.row['label']} at "
                         f"ratio {point.row['ratio']:g} -> accuracy {point.row['accuracy']:.1%}")
        record["finished"] = True
        status.update(label=f"Sweep finished: {len(record['points'])} points in "
                      f"{time.perf_counter() - start:.1f} s", state="complete", expanded=False)
    return record


# ----- formatting and the shared sidebar -------------------------------------------------------------------


def fmt_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def render_sidebar() -> None:
    ss = st.session_state
    if "wb" not in ss:
        return
    wb, model, data = ss["wb"], ss["model_info"], ss["data_info"]
    dense = wb.dense_metrics()
    with st.sidebar:
        st.markdown(f"**Model** · {plain(model['name'])}  \n**Data** · {plain(data['name'])}  \n"
                    f"**Device** · `{wb.device}`")
        st.metric("Dense accuracy", f"{dense.accuracy:.2%}",
                  help=f"On the {data['evaluation']} evaluation samples; loss {dense.loss:.4f}.")
