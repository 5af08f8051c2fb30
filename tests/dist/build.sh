#!/usr/bin/env bash
# What `make dist` runs: builds what a release would publish into one folder (default dist/, git-ignored),
# from the working tree as it is. Idempotent: the folder is emptied first. tests/dist/ installs these
# artifacts into projects outside the repository, exactly as each library's guide says.
#
#   python/  jetbridge (the dispatcher) and jetbridge-sdk: a wheel and an sdist each
#   node/    jetbridge-<version>.tgz, `npm pack` of interop/node (compiled JS and type declarations)
#   rust/    jetbridge-<version>.crate, `cargo package` of interop/rust
#   go/      jetbridge-go-<version>.zip, the module github.com/jetbridge/jetbridge/interop/go in the folder
#            jetbridge-go-<version>/ (used through a `replace` line, see interop/go/README.md)
#
# Usage: tests/dist/build.sh [OUT] [PYTHON]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$(mkdir -p "${1:-$REPO/dist}" && cd "${1:-$REPO/dist}" && pwd)"
PY="$(realpath -s "${2:-$REPO/.venv/bin/python}")"
command -v npm >/dev/null || { echo "make dist: npm is required but not installed" >&2; exit 1; }
"$PY" -c 'import build' 2>/dev/null || { echo "make dist: $PY has no 'build' module: run make venv" >&2; exit 1; }
rm -rf "${OUT:?}"/{python,node,rust,go}
mkdir -p "$OUT"/{python,node,rust,go}

echo "== python"
# Isolated builds (pip fetches setuptools as [build-system] asks), so nothing of the repo's venv leaks in.
"$PY" -m build --quiet --outdir "$OUT/python" "$REPO/sdk-python"
"$PY" -m build --quiet --outdir "$OUT/python" "$REPO"

echo "== node"
# build.sh compiles from a clean dist/; the tarball ships only dist/src (package.json "files").
"$REPO/interop/node/build.sh" >/dev/null
(cd "$REPO/interop/node" && npm_config_cache="$REPO/.cache/npm" npm pack --ignore-scripts --silent \
  --pack-destination "$OUT/node" >/dev/null)

echo "== rust"
# --allow-dirty: like the other artifacts, the crate is built from the working tree as it is, committed or not.
# --no-verify: the outside-project test (tests/dist) compiles the unpacked crate on its own, which is the check.
(source "$REPO/interop/rust/env.sh" && cd "$RUST_DIR" \
  && "$CARGO" package --quiet --allow-dirty --no-verify \
  && cp "$CARGO_TARGET_DIR"/package/jetbridge-*.crate "$OUT/rust/")

echo "== go"
GO_VERSION="$(sed -n 's/^const Version = "\(.*\)"$/\1/p' "$REPO/interop/go/version.go")"
GO_DIR="jetbridge-go-$GO_VERSION"
mkdir -p "$OUT/go/$GO_DIR"
# The library, its example and the conformance handler; tests stay behind (they read the repo's protocol/).
(cd "$REPO/interop/go" && cp --parents go.mod go.sum README.md $(ls *.go | grep -v '_test\.go$') \
  -r cmd examples jbotel jbprom "$OUT/go/$GO_DIR/")
(cd "$OUT/go" && "$PY" -m zipfile -c "$GO_DIR.zip" "$GO_DIR" && rm -rf "$GO_DIR")

echo "built:"
(cd "$OUT" && find python node rust go -type f | sort | sed 's/^/  /')
