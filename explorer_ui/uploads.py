"""Uploads the browser refuses.

Streamlit's uploader checks a file's size (server.maxUploadSize) and type in the browser. A refused file is
never sent: the server sees no change at all (no rerun), and in single-file mode the uploader keeps the file
it had, so Load would quietly use that earlier file. A small script mounted on the page watches the
uploaders' file inputs and drops, and reports a refused file (its name, size and why) to the server, which
then clears that uploader (a new widget key) and says what was refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from .formatting import fmt_bytes, plain

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
