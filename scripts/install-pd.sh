#!/usr/bin/env bash
# Tries once per machine to build PD's pd-server (v8.1.2) from the Go module proxy into the tools cache
# ($TBRS_TOOLS/pd-v8.1.2/bin), where the test harness (tests/src/pd.rs) and scripts/services.sh find it.
# The proxy these machines reach refuses github.com/tikv/pd today (403 "This module version is not
# available"), so this usually ends with a note and the tests run the PD stand-in (tests/src/pd_standin.rs)
# instead; nothing here is an error. A refusal is remembered for a day so cold runs do not repeat it.
set -uo pipefail
TOOLS="${TBRS_TOOLS:-$HOME/.cache/tbrs}"
DEST="$TOOLS/pd-v8.1.2/bin"
MODULE="github.com/tikv/pd/cmd/pd-server@v1.1.0-beta.0.20241220032209-c1ee9cf28f6d"
[ -x "$DEST/pd-server" ] && { echo "install-pd: pd-server in $DEST"; exit 0; }
command -v go >/dev/null || { echo "install-pd: no Go; the tests use the PD stand-in"; exit 0; }
mark="$TOOLS/pd-v8.1.2/refused"
if [ -f "$mark" ] && [ -n "$(find "$mark" -mmin -1440)" ]; then
  echo "install-pd: the Go module proxy refused tikv/pd within the last day; the tests use the PD stand-in"
  exit 0
fi
mkdir -p "$DEST"
if CGO_ENABLED=0 GOBIN="$DEST" GOFLAGS=-buildvcs=false go install -tags without_dashboard \
    -ldflags=-checklinkname=0 "$MODULE" >"$TOOLS/pd-v8.1.2/build.log" 2>&1; then
  echo "install-pd: built pd-server into $DEST"
else
  touch "$mark"
  echo "install-pd: the Go module proxy did not serve $MODULE ($(grep -m1 -o '[0-9][0-9][0-9] [A-Za-z ]*' \
    "$TOOLS/pd-v8.1.2/build.log" || echo 'see build.log')); the tests use the PD stand-in"
fi
exit 0
