#!/usr/bin/env bash
# Watch fan-out on a 3-node cluster on this machine: for each subscriber count (default
# 1000, 5000, 10000), a separate load process starts that many SDK subscribers spread over the
# nodes and makes a stream of `now` toggle changes; it reports lag, flip spread, server memory
# per idle subscriber and CPU. A fresh cluster per count, so memory figures do not mix.
#
#   benches/fanout.sh
#   COUNTS="1000 10000" CHANGES=30 benches/fanout.sh
set -euo pipefail
cd "$(dirname "$0")/.."

COUNTS=${COUNTS:-"1000 5000 10000"}
CHANGES=${CHANGES:-20}
# Three nodes share this machine's two cores: each runs on one thread (serve --threads 1).
SERVE_ARGS=${SERVE_ARGS:---threads 1}
# shellcheck source=benches/lib.sh
. benches/lib.sh
ulimit -n 65536 2>/dev/null || true

base=17900
for n in $COUNTS; do
  start_switchyard $base
  pids=$(IFS=,; echo "${PIDS[*]}")
  echo "== $n subscribers"
  "$BENCH" --endpoints "$SY_EP" fanout --subscribers "$n" --changes "$CHANGES" --server-pids "$pids" ${FANOUT_ARGS:-}
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  PIDS=()
  base=$((base + 10))
done
