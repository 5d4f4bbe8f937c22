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
cargo build --release -q
BIN=target/release/switchyard
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

EP=127.0.0.1:17801,127.0.0.1:17802,127.0.0.1:17803
IC=1=127.0.0.1:17801,2=127.0.0.1:17802,3=127.0.0.1:17803
for i in 1 2 3; do
  RUST_LOG=warn "$BIN" serve --id $i --listen 127.0.0.1:1780$i --data-dir "$WORK/n$i" \
    --initial-cluster $IC 2>"$WORK/n$i.log" &
  PIDS+=($!)
done
for _ in $(seq 100); do
  "$BIN" --endpoints $EP status --output json 2>/dev/null | grep -q '"role": "leader"' && break
  sleep 0.2
done

ticks() { for p in "${PIDS[@]}"; do awk '{print $14+$15}' /proc/"$p"/stat; done | paste -sd' '; }
HZ=$(getconf CLK_TCK)
"$BIN" --endpoints $EP bench registry --instances "$INSTANCES" --hold "$HOLD" 2> >(
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
