#!/usr/bin/env bash
# Set up and run every test: engine unit tests, AppTest page tests and real-browser tests in headless Chromium.
# Chromium comes from Debian (apt-get, as root); without it the browser tests are skipped and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh -r requirements-test.txt
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing Debian's Chromium for the browser tests..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "Could not install Chromium with apt-get: the browser tests will be skipped."
  else
    echo "Chromium is not installed and this shell is not root with apt-get: the browser tests will be skipped."
  fi
fi
export STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
exec .venv/bin/python -m pytest tests -ra "$@"
