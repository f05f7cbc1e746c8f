#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test this project: protoc, etcd, MariaDB (Debian
# packages), the Tansu Kafka-protocol broker (crates.io, built once into $TBRS_TOOLS/tansu) and, where
# the Go module proxy serves it, PD's pd-server (scripts/install-pd.sh; else the tests use the PD stand-in).
# Idempotent: each step is skipped when its tool is already there.
set -euo pipefail
TOOLS="${TBRS_TOOLS:-$HOME/.cache/tbrs}"

need_apt=()
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
command -v etcd >/dev/null || need_apt+=(etcd-server etcd-client)
{ command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; } || need_apt+=(mariadb-server mariadb-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! "$TOOLS/tansu/bin/tansu" --version 2>/dev/null | grep -q '0\.6'; then
  echo "install-deps: cargo install tansu 0.6 into $TOOLS/tansu (about 10 minutes on 2 cores)"
  mkdir -p "$TOOLS"
  cargo install tansu --version '~0.6' --locked --no-default-features --features dynostore \
    --root "$TOOLS/tansu" --quiet
fi
bash "$(dirname "$0")/install-pd.sh"
echo "install-deps: protoc $(protoc --version | cut -d' ' -f2), $(etcd --version | head -1)," \
  "$(/usr/sbin/mariadbd --version | cut -d' ' -f4), $("$TOOLS/tansu/bin/tansu" --version)"
