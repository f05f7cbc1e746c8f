#!/usr/bin/env bash
# Installs Apache Kafka (broker and tools, org.apache.kafka:kafka_2.13 + kafka-tools) from Maven Central
# into $TBRS_TOOLS/kafka-<version>/libs (default ~/.cache/tbrs), resolved by scripts/kafka/pom.xml.
# Installs Java 17 and Maven from Debian when missing. Idempotent: skipped when the libs folder is complete (a `.complete` marker).
set -euo pipefail
cd "$(dirname "$0")"
TOOLS="${TBRS_TOOLS:-$HOME/.cache/tbrs}"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' kafka/pom.xml)
home="$TOOLS/kafka-$version"
[ -f "$home/.complete" ] && exit 0
need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-kafka: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
echo "install-kafka: resolving Apache Kafka $version from Maven Central into $home"
rm -rf "$home/libs"
mkdir -p "$home"
mvn -q -B -f kafka/pom.xml -Dmaven.repo.local="$TOOLS/m2" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$home/libs"
ls "$home/libs"/kafka_2.13-"$version".jar >/dev/null
touch "$home/.complete"
