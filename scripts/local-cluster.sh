#!/usr/bin/env bash
# README's first command: a local cluster on loopback, end to end.
# Today it starts what exists: etcd (PD's registry), an upstream and a downstream MariaDB, checks that
# they answer, and stops them. Pumps, drainer and the TiDB stand-in join here as they land (issue 10).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
work=$(mktemp -d /tmp/tbrs-local-XXXXXX)
trap 'for s in etcd up down; do bash scripts/services.sh stop "$work/$s"; done; rm -rf "$work"' EXIT
bash scripts/services.sh start etcd "$work/etcd" 23790
bash scripts/services.sh start mariadb "$work/up" 33061
bash scripts/services.sh start mariadb "$work/down" 33062
ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:23790 endpoint health
for p in 33061 33062; do
  for _ in $(seq 1 100); do mariadb --no-defaults -h127.0.0.1 -P$p -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  mariadb --no-defaults -h127.0.0.1 -P$p -uroot -N -e "SELECT CONCAT('mariadb on $p: ', VERSION())"
done
echo "local cluster: services up; pumps, drainer and the workload are not built yet"
