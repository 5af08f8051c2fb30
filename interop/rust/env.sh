# Sourced by build.sh, test.sh and conformance.sh: the toolchain and the caches inside the clone.

RUST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$RUST_DIR/../.." && pwd)"

# Find cargo before CARGO_HOME moves: rustup's proxies live in the default CARGO_HOME's bin.
PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin:$HOME/.cargo/bin"
CARGO="$(command -v cargo)" || { echo "cargo not found: install Rust with rustup" >&2; return 1; }

export CARGO_HOME="$REPO/.cache/cargo"
export CARGO_TARGET_DIR="$REPO/.cache/rust-target"
CONFORMANCE_BIN="$CARGO_TARGET_DIR/release/jetbridge-conformance"
