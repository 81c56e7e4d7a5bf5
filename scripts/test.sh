#!/usr/bin/env bash
# The project's test command: format, lints, then every unit and integration test.
# Integration tests start real `meridian` processes on 127.0.0.1 (ports chosen by the OS).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The integration tests spawn the binary; build it first so they do not race to build it.
cargo build -p meridian --bin meridian
export MERIDIAN_SKIP_BUILD=1
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "cargo-nextest not found; falling back to cargo test" >&2
    cargo test --workspace --no-fail-fast "$@"
fi
