#!/usr/bin/env bash
# Registry churn on a 3-node cluster on this machine: INSTANCES instances (default 10,000)
# register with leases and keep them alive; reports keepalive CPU per node over the hold
# window, Raft log growth during it, and the time from the last old instance leaving to the
# when-ready activation being committed.
#
#   benches/registry.sh
#   INSTANCES=5000 HOLD=20 benches/registry.sh
set -euo pipefail
cd "$(dirname "$0")/.."

INSTANCES=${INSTANCES:-10000}
HOLD=${HOLD:-30}
# shellcheck source=benches/lib.sh
. benches/lib.sh
start_switchyard 17800

ticks() { for p in "${PIDS[@]}"; do awk '{print $14+$15}' /proc/"$p"/stat; done | paste -sd' '; }
HZ=$(getconf CLK_TCK)
"$BENCH" --endpoints "$SY_EP" registry --instances "$INSTANCES" --hold "$HOLD" 2> >(
  while IFS= read -r line; do
    echo "$line" >&2
    case "$line" in
      "HOLD START") ticks > "$WORK/cpu0" ;;
      "HOLD END") ticks > "$WORK/cpu1" ;;
    esac
  done
)
sleep 0.5
python3 - "$WORK/cpu0" "$WORK/cpu1" "$HOLD" "$HZ" "$INSTANCES" <<'PY'
import sys
a = list(map(int, open(sys.argv[1]).read().split()))
b = list(map(int, open(sys.argv[2]).read().split()))
hold, hz, n = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
cpu = [(y - x) / hz / hold * 100 for x, y in zip(a, b)]
print("node CPU during the keepalive-only hold: " + ", ".join(f"node{i+1} {c:.1f}%" for i, c in enumerate(cpu))
      + f" (sum {sum(cpu):.1f}% of one core for {n} instances)")
PY
