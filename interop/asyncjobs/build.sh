#!/usr/bin/env bash
# Builds the asyncjobs compatibility tools into $REPO/.build/asyncjobs/<version>/:
#
#   build.sh [VERSION] [ajcompat|ajc]    VERSION: v0.1.2 (default) or v0.3.0
#
# ajcompat is this directory's driver, built from one source against either asyncjobs release: go.mod pins v0.1.2,
# go.v030.mod (used with -modfile and the build tag ajv030) pins v0.3.0. ajc is asyncjobs' own CLI, built from the
# module v0.3.0 pins (go.v030.mod's `tool` line); only v0.3.0's is built (v0.1.2's has the same cron commands but
# no --sign/--verify).
# Modules come from the Go module proxy, checked against go.sum / go.v030.sum; the module and build caches stay
# inside the clone. Re-running is cheap: Go's build cache does the caching.
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DIR/../.." && pwd)"
VERSION="${1:-v0.1.2}"
WHAT="${2:-ajcompat}"
PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "go not found: install Go (1.25 or newer) to build interop/asyncjobs" >&2; exit 1; }

export GOMODCACHE="$REPO/.cache/go/mod" GOCACHE="$REPO/.cache/go/build"
export GOFLAGS="-mod=readonly -buildvcs=false" GOTOOLCHAIN=local GOWORK=off
case "$VERSION" in
  v0.1.2) MOD=(-modfile=go.mod) TAGS=() ;;
  v0.3.0) MOD=(-modfile=go.v030.mod) TAGS=(-tags ajv030) ;;
  *) echo "build.sh: unknown asyncjobs version '$VERSION' (v0.1.2 or v0.3.0)" >&2; exit 2 ;;
esac
OUT="$REPO/.build/asyncjobs/$VERSION/$WHAT"
mkdir -p "$(dirname "$OUT")"
cd "$DIR"
case "$WHAT" in
  ajcompat) go build "${MOD[@]}" "${TAGS[@]}" -trimpath -o "$OUT" . ;;
  ajc)
    [ "$VERSION" = v0.3.0 ] || { echo "build.sh: only v0.3.0's ajc is built" >&2; exit 2; }
    go build "${MOD[@]}" -trimpath -ldflags "-X main.version=$VERSION" -o "$OUT" github.com/choria-io/asyncjobs/ajc ;;
  *) echo "build.sh: unknown target '$WHAT' (ajcompat or ajc)" >&2; exit 2 ;;
esac
echo "built $OUT"
