#!/usr/bin/env bash
# Runs the conformance handler (interop/README.md: NATS_URL, JETBRIDGE_SUBJECT_PREFIX, JETBRIDGE_INSTANCE,
# JETBRIDGE_CONCURRENCY). exec, so that SIGTERM reaches node and drains the handler. Run build.sh first.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec node "$HERE/dist/bin/conformance.js"
