#!/usr/bin/env bash
# Builds the jetbridge Node package, its tests and the conformance handler from a clean checkout
# (interop/README.md). Idempotent; npm's cache stays inside the clone, under the ignored .cache/.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export npm_config_cache="$REPO/.cache/npm"
cd "$HERE"
# --prefer-offline: a warm cache is enough, so rebuilds work without the network.
npm ci --prefer-offline --no-audit --no-fund
rm -rf dist
./node_modules/.bin/tsc -p .
