#!/usr/bin/env bash
# Runs the Go conformance handler (interop/README.md), building it first if
# it is missing. exec, so that SIGTERM reaches the handler itself.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BIN="$REPO/.build/go/conformance"
if [ ! -x "$BIN" ]; then
	"$HERE/build.sh" >&2
fi
exec "$BIN"
