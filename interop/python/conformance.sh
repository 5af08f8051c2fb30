#!/usr/bin/env bash
# The Python SDK's conformance handler (see interop/README.md).
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
exec "$REPO/.venv/bin/python" "$REPO/interop/python/conformance_handler.py"
