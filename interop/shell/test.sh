#!/usr/bin/env bash
# The shell handler's own tests: `jetbridge handle` running real scripts through a real dispatcher (tests/handle).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO" && exec .venv/bin/python -m pytest -q tests/handle "$@"
