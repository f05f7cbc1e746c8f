#!/usr/bin/env bash
# Starts or stops one real service on loopback for manual use (tests use the Rust harness in tests/).
#   scripts/services.sh start pd|etcd|mariadb|kafka DIR PORT
# `pd` is a real pd-server from the tools cache (scripts/install-pd.sh) or PATH; without one it is the PD
# stand-in (`target/debug/pd-standin`, built by cargo) in front of an etcd in DIR/etcd on PORT+2.
# `kafka` is Apache Kafka, single-node KRaft; its controller also takes PORT+1.
#   scripts/services.sh stop DIR
# Each service keeps its data and log in DIR and its PID in DIR/pid.
set -euo pipefail
scripts=$(cd "$(dirname "$0")" && pwd)
TOOLS="${TBRS_TOOLS:-$HOME/.cache/tbrs}"
cmd=${1:?start|stop}; shift
case "$cmd" in
  start)
    what=${1:?pd|etcd|mariadb|kafka}; dir=${2:?DIR}; port=${3:?PORT}
    mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
    case "$what" in
      etcd)
        peer=$((port + 1))
        etcd --name n1 --data-dir "$dir/data" \
          --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
          --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
          --initial-cluster "n1=http://127.0.0.1:$peer" >"$dir/etcd.log" 2>&1 &
        ;;
      pd)
        peer=$((port + 1))
        pd_server="$TOOLS/pd-v8.1.2/bin/pd-server"
        [ -x "$pd_server" ] || pd_server=$(command -v pd-server || true)
        if [ -n "$pd_server" ]; then
          "$pd_server" --name pd1 --data-dir "$dir/data" --client-urls "http://127.0.0.1:$port" \
            --peer-urls "http://127.0.0.1:$peer" --initial-cluster "pd1=http://127.0.0.1:$peer" >"$dir/pd.log" 2>&1 &
        else
          "$0" start etcd "$dir/etcd" $((port + 2)) >/dev/null
          here=$(cd "$(dirname "$0")/.." && pwd)
          [ -x "$here/target/debug/pd-standin" ] || (cd "$here" && cargo build -q -p tests --bin pd-standin)
          "$here/target/debug/pd-standin" --client-urls "http://127.0.0.1:$port" \
            --etcd "http://127.0.0.1:$((port + 2))" >"$dir/pd.log" 2>&1 &
        fi
        ;;
      mariadb)
        [ -d "$dir/data/mysql" ] || mariadb-install-db --no-defaults --user=root --datadir="$dir/data" \
          --auth-root-authentication-method=normal --skip-test-db --innodb-log-file-size=8M >"$dir/install.log" 2>&1
        /usr/sbin/mariadbd --no-defaults --user=root --datadir="$dir/data" --socket="$dir/s.sock" \
          --port="$port" --bind-address=127.0.0.1 --pid-file="$dir/mariadb.pid" --log-error="$dir/err.log" \
          --innodb-log-file-size=8M >/dev/null 2>&1 &
        ;;
      kafka)
        # Apache Kafka, single-node KRaft (broker and controller), storage formatted on first start.
        bash "$scripts/install-kafka.sh"
        libs="$TOOLS/kafka-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$scripts/kafka/pom.xml")/libs"
        cp "$scripts/kafka/log4j2.properties" "$dir/"
        printf '%s\n' process.roles=broker,controller node.id=1 "controller.quorum.voters=1@127.0.0.1:$((port + 1))" \
          "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))" \
          "advertised.listeners=PLAINTEXT://127.0.0.1:$port" controller.listener.names=CONTROLLER \
          listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT "log.dirs=$dir/data" \
          offsets.topic.replication.factor=1 transaction.state.log.replication.factor=1 \
          transaction.state.log.min.isr=1 group.initial.rebalance.delay.ms=0 >"$dir/server.properties"
        java=(java -Xms256m -Xmx1g "-Dlog4j2.configurationFile=$dir/log4j2.properties" -cp "$libs/*")
        "${java[@]}" kafka.tools.StorageTool format --ignore-formatted -t dGJycy10ZXN0LWthZmthLg \
          -c "$dir/server.properties" >"$dir/format.log" 2>&1
        "${java[@]}" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
        ;;
      *) echo "unknown service $what" >&2; exit 2 ;;
    esac
    echo $! >"$dir/pid"
    for _ in $(seq 1 200); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "$what listening on 127.0.0.1:$port (pid $(cat "$dir/pid"))"; exit 0; }
      sleep 0.1
    done
    echo "$what did not start; see $dir" >&2; exit 1
    ;;
  stop)
    dir=${1:?DIR}
    [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true
    rm -f "$dir/pid"
    [ -f "$dir/etcd/pid" ] && "$0" stop "$dir/etcd"  # the PD stand-in's etcd
    ;;
  *) echo "usage: $0 start pd|etcd|mariadb|kafka DIR PORT | stop DIR" >&2; exit 2 ;;
esac
