#!/usr/bin/env bash
# Watch fan-out on a 3-node cluster on this machine: for each subscriber count (default
# 1000, 5000, 10000), a separate load process starts that many SDK subscribers spread over the
# nodes and makes a stream of `now` toggle changes; it reports lag, flip spread, server memory
# per idle subscriber and CPU. A fresh cluster per count, so memory figures do not mix.
#
# With LEARNERS=N, N learners join the 3 voters and the subscribers watch from them alone (the
# writes go to the voters, as a release manager's would); the memory figure is then over all
# five nodes. FANOUT_ARGS="--churn 50" adds registry writes during the changes (a fleet
# restarting), with their latency: the write latency under fan-out.
#
#   benches/fanout.sh
#   COUNTS="1000 10000" CHANGES=30 benches/fanout.sh
#   LEARNERS=2 COUNTS="10000 30000" FANOUT_ARGS=--raw benches/fanout.sh
#
# Past a few thousand subscribers the SDKs' own work on these two cores would be measured
# with the nodes'; FANOUT_ARGS=--raw watches with tonic clients that only decode, and
# FANOUT_ARGS=--wire with a bare HTTP/2 reader (bench/src/wire.rs) that costs the machine
# least. A node admits 50,000 streams, and 50,000 per caller, by default; 100,000 subscribers
# from one load process over two learners need some room above that:
#
#   SERVE_ARGS="--max-watches 60000 --limit-watches 60000" LEARNERS=2 COUNTS=100000 \
#     CHANGES=10 FANOUT_ARGS=--wire benches/fanout.sh
set -euo pipefail
cd "$(dirname "$0")/.."

COUNTS=${COUNTS:-"1000 5000 10000"}
LEARNERS=${LEARNERS:-0}
CHANGES=${CHANGES:-20}
# The nodes run with serve's defaults (SERVE_ARGS="--threads 1" for one thread per node).
SERVE_ARGS=${SERVE_ARGS:-}
# shellcheck source=benches/lib.sh
. benches/lib.sh
ulimit -n 65536 2>/dev/null || true

base=17900
for n in $COUNTS; do
  start_switchyard $base
  ep=$SY_EP
  if [ "$LEARNERS" -gt 0 ]; then
    add_learners $base "$LEARNERS"
    ep=$LEARNER_EP
  fi
  pids=$(IFS=,; echo "${PIDS[*]}")
  echo "== $n subscribers ($LEARNERS learners)"
  # shellcheck disable=SC2086
  "$BENCH" --endpoints "$ep" fanout --subscribers "$n" --changes "$CHANGES" --server-pids "$pids" \
    --write-endpoints "$SY_EP" ${FANOUT_ARGS:-}
  stop_nodes
  base=$((base + 10))
done
