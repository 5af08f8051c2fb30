#!/usr/bin/env bash
# Builds the Go library, its example and the conformance handler
# ($REPO/.build/go/conformance), keeping Go's caches inside the clone.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export GOMODCACHE="$REPO/.cache/go/mod" GOCACHE="$REPO/.cache/go/build"
cd "$HERE"
go build ./...
mkdir -p "$REPO/.build/go"
go build -o "$REPO/.build/go/conformance" ./cmd/conformance
echo "built $REPO/.build/go/conformance"
go build -o "$REPO/.build/go/resize" ./examples/resize
# The tracing module (jbotel, its own module: OpenTelemetry stays out of the main one) and its traced handler,
# used by tests/tracing.
(cd jbotel && go build ./... && go build -o "$REPO/.build/go/traced" ./cmd/traced)
# The metrics module (jbprom, its own module: the Prometheus client stays out of the main one).
(cd jbprom && go build ./...)
