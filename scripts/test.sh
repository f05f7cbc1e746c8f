#!/usr/bin/env bash
# The project's test command (README.md's second command; .ci/run calls it too).
# Installs what is missing (scripts/install-deps.sh, idempotent: a no-op once everything is there), builds
# every binary first, since the process-level tests in `tests/` start them, then runs all tests.
# Warnings are errors: the workspace lints deny them (Cargo.toml [workspace.lints]).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >/dev/null

cargo build --workspace --bins --quiet
cargo test --workspace --no-fail-fast "$@"
