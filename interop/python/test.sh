#!/usr/bin/env bash
# The Python SDK's own tests, including every protocol vector.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$REPO" && exec .venv/bin/python -m pytest -q tests/protocol tests/sdk
