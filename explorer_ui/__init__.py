"""The UI side of a session, shared by ``app.py`` and the screens in ``pages/`` (``import explorer_ui as ui``).
No tensor math here: every number comes from ``pruning_core``.

  state       the session's typed state (workbench, model and data, prepared methods, sweeps, plan choice,
              export) and how a session gets its workbench
  sources     where a model and a dataset come from, and the process-wide caches that load them
  widgets     values that outlive their page (``keep``, ``bind``), the shared plan picker, ratio lists
  uploads     files the browser refuses, watched and named
  plans       which methods the model can use, prepared once, and the plan choice
  runners     long jobs with progress that keep what finished (the live sweep, a paper check)
  limit       the predicted limit of pruning (Zhang et al.): settings, an estimate per model, its summary
  sidebar     the shared sidebar
  formatting  numbers, names from the person's machine, errors
"""

from pruning_core import REGISTRY, DataError
from pruning_core.loading import ModelLoadError
from pruning_core.models import ARCHITECTURES

from .formatting import fmt_bytes, fmt_count, plain, show_error
from .limit import limit_controls
from .plans import available_methods, choice, method_label, plan_for, prepared, structured_note
from .runners import run_check_live, run_sweep_live
from .sidebar import render_sidebar
from .sources import (
    ARCHITECTURE_CHOICES,
    DEMO_MODEL,
    DIGITS_ID,
    DataSource,
    ModelSource,
    architecture_title,
    builtin_model,
    bundled_digits,
)
from .state import (
    DEFAULT_RATIO,
    DataInfo,
    ExplorerState,
    ExportRecord,
    ModelInfo,
    SweepRecord,
    SweepSettings,
    ensure_session,
    has_state,
    install_workbench,
    open_workbench,
    require_session,
    state,
    workbench,
)
from .uploads import (
    MODEL_DATA_UPLOADERS,
    RefusedUpload,
    forget_refused,
    note_refused,
    refused_upload,
    upload_limit_mb,
    uploader_key,
    watch_uploads,
)
from .widgets import bind, keep, parse_ratios, plan_picker

__all__ = [
    "ARCHITECTURES", "ARCHITECTURE_CHOICES", "DEFAULT_RATIO", "DEMO_MODEL", "DIGITS_ID", "MODEL_DATA_UPLOADERS",
    "REGISTRY", "DataError", "DataInfo", "DataSource", "ExplorerState", "ExportRecord", "ModelInfo", "ModelLoadError",
    "ModelSource", "RefusedUpload", "SweepRecord", "SweepSettings", "architecture_title", "available_methods",
    "bind", "builtin_model", "bundled_digits", "choice", "ensure_session", "fmt_bytes", "fmt_count",
    "forget_refused", "has_state", "install_workbench", "keep", "limit_controls", "method_label", "note_refused",
    "open_workbench", "parse_ratios", "plain", "plan_for", "plan_picker", "prepared", "refused_upload",
    "render_sidebar", "require_session", "run_check_live", "run_sweep_live", "show_error", "state", "structured_note",
    "upload_limit_mb",
    "uploader_key", "watch_uploads", "workbench",
]
