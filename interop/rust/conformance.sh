#!/usr/bin/env bash
# Replaces itself with the conformance handler built by build.sh, so that signals reach it.
# Reads NATS_URL, JETBRIDGE_SUBJECT_PREFIX, JETBRIDGE_INSTANCE, JETBRIDGE_CONCURRENCY.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [[ ! -x "$CONFORMANCE_BIN" ]]; then
    echo "no $CONFORMANCE_BIN: run interop/rust/build.sh first" >&2
    exit 1
fi
exec "$CONFORMANCE_BIN" "$@"
