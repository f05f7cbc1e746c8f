#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test this project: protoc, etcd, MariaDB (Debian
# packages), Apache Kafka (scripts/install-kafka.sh: Java 17 and Maven, then jars from Maven Central) and,
# where the Go module proxy serves it, PD's pd-server (scripts/install-pd.sh; else the tests use the PD stand-in).
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

bash "$(dirname "$0")/install-kafka.sh"
bash "$(dirname "$0")/install-pd.sh"
echo "install-deps: protoc $(protoc --version | cut -d' ' -f2), $(etcd --version | head -1)," \
  "$(/usr/sbin/mariadbd --version | cut -d' ' -f4), kafka $(cd "$(dirname "$0")" && sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' kafka/pom.xml)"
