#!/usr/bin/env bash
# Builds ajcompat, the asyncjobs compatibility driver, into $REPO/.build/asyncjobs/ajcompat.
# The asyncjobs module and its dependencies come from the Go module proxy, pinned by go.mod and go.sum; the
# module and build caches stay inside the clone. Re-running is cheap: Go's build cache does the caching.
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DIR/../.." && pwd)"
PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "go not found: install Go (1.22 or newer) to build interop/asyncjobs" >&2; exit 1; }

export GOMODCACHE="$REPO/.cache/go/mod" GOCACHE="$REPO/.cache/go/build"
export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local
OUT="$REPO/.build/asyncjobs/ajcompat"
mkdir -p "$(dirname "$OUT")"
cd "$DIR"
go build -trimpath -o "$OUT" .
echo "built $OUT"
