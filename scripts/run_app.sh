#!/usr/bin/env bash
# Set up and start Pruning Explorer on the demo (residual CNN on the bundled digits): http://localhost:8501
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m streamlit run app.py --server.headless true --browser.gatherUsageStats false \
  --server.fileWatcherType none "$@"
