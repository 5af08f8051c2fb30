#!/usr/bin/env bash
# Builds the jetbridge crate and the conformance handler (release) from a clean checkout.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$RUST_DIR"
"$CARGO" build --release --bin jetbridge-conformance
echo "built $CONFORMANCE_BIN"
# The handler with the OpenTelemetry middleware (feature `otel`), used by tests/tracing.
"$CARGO" build --release --features otel --example traced
echo "built $CARGO_TARGET_DIR/release/examples/traced"
