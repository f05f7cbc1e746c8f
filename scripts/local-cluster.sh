#!/usr/bin/env bash
# README's first command: a whole TiDB-Binlog cluster on loopback, end to end, verified.
# Installs what is missing, builds our binaries, then runs `local-cluster` (tests/src/bin/local-cluster.rs):
# etcd, 3 pumps, a drainer, upstream and downstream MariaDB and the TiDB stand-in's workload; it waits for
# the drainer to catch up and exits 0 only if the downstream equals the upstream.
# Flags pass through, e.g. `scripts/local-cluster.sh --sink file --duration 60s --threads 8`
# (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh >/dev/null
cargo build --workspace --bins --quiet
exec target/debug/local-cluster "$@"
