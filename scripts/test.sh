#!/usr/bin/env bash
# The project's test command (README.md's second command; .ci/run calls it after install-deps.sh).
# Builds every binary first, since the process-level tests in `tests/` start them, then runs all tests.
# Warnings are errors: the workspace lints deny them (Cargo.toml [workspace.lints]).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --quiet
cargo test --workspace --no-fail-fast "$@"
