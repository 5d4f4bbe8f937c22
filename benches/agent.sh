#!/usr/bin/env bash
# The agent's own cost beside an instance: its CPU and memory while idle, and during a burst of
# changes to the flags it follows (CLIENTS concurrent writers for BURST_S seconds on 100
# features, every change reaching the agent). ROUNDS rounds (default 3), each on a fresh
# 3-node cluster on this machine; medians printed.
#
#   benches/agent.sh
#   ROUNDS=1 IDLE_S=5 BURST_S=3 benches/agent.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
IDLE_S=${IDLE_S:-20}
BURST_S=${BURST_S:-5}
CLIENTS=${CLIENTS:-16}
# shellcheck source=benches/lib.sh
. benches/lib.sh
OUT=$(mktemp -d)
features=$(seq -s, -f 'bench-%g' 0 99)

# utime+stime of PID in clock ticks, and its resident and peak resident memory in KiB.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }

for r in $(seq "$ROUNDS"); do
  base=$((18500 + 20 * r))
  start_switchyard "$base"
  echo "round $r/$ROUNDS" >&2
  # The 100 features (and a first toggle each).
  "$BENCH" --endpoints "$SY_EP" put --clients 1 --seconds 1 --keys 100 >/dev/null
  RUST_LOG=warn "$BIN" --endpoints "$SY_EP" agent --service cart --version 2.0.0 \
    --feature "$features" --flagd-listen "127.0.0.1:$((base + 10))" \
    --http-listen "127.0.0.1:$((base + 11))" 2>"$WORK/agent.log" &
  agent=$!
  PIDS+=("$agent")
  for _ in $(seq 100); do
    "$BIN" health --addr "127.0.0.1:$((base + 11))" >/dev/null 2>&1 && break
    sleep 0.1
  done
  sleep 2
  t0=$(ticks "$agent"); s0=$(date +%s.%N)
  sleep "$IDLE_S"
  t1=$(ticks "$agent"); s1=$(date +%s.%N); idle_rss=$(rss "$agent")
  "$BENCH" --endpoints "$SY_EP" --output json put --clients "$CLIENTS" --seconds "$BURST_S" --keys 100 \
    > "$OUT/put-$r.json"
  t2=$(ticks "$agent"); s2=$(date +%s.%N); burst_hwm=$(hwm "$agent")
  status=$(python3 -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$((base + 11))/status').read().decode())")
  cluster_rev=$("$BIN" --endpoints "$SY_EP" --output json toggle list | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])')
  hz=$(getconf CLK_TCK)
  python3 - "$OUT/round-$r.json" "$t0" "$t1" "$t2" "$s0" "$s1" "$s2" "$hz" "$idle_rss" "$burst_hwm" "$status" "$cluster_rev" "$OUT/put-$r.json" <<'PY'
import json, sys
out, t0, t1, t2, s0, s1, s2, hz, idle_rss, hwm, status, cluster_rev, put = sys.argv[1:]
t0, t1, t2, hz = int(t0), int(t1), int(t2), int(hz)
s0, s1, s2 = float(s0), float(s1), float(s2)
status = json.loads(status)
runs = json.load(open(put))
changes = sum(level["ops"] for level in runs)
json.dump({
    "idle_cpu_pct": 100 * (t1 - t0) / hz / (s1 - s0),
    "burst_cpu_pct": 100 * (t2 - t1) / hz / (s2 - s1),
    "idle_rss_mib": int(idle_rss) / 1024,
    "burst_peak_rss_mib": int(hwm) / 1024,
    "changes": changes,
    "burst_seconds": s2 - s1,
    "caught_up": status["revision"] >= int(cluster_rev) - 0,
    "agent_revision": status["revision"],
    "cluster_revision": int(cluster_rev),
}, open(out, "w"))
PY
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rs = [json.load(open(f"{out}/round-{r}.json")) for r in range(1, rounds + 1)]
med = lambda k: statistics.median(r[k] for r in rs)
print(f"medians of {rounds} rounds (runs: {[round(r['burst_cpu_pct'], 1) for r in rs]} % CPU in bursts)")
print(f"idle:  CPU {med('idle_cpu_pct'):.2f} %  RSS {med('idle_rss_mib'):.1f} MiB")
print(f"burst: CPU {med('burst_cpu_pct'):.1f} %  peak RSS {med('burst_peak_rss_mib'):.1f} MiB  "
      f"({med('changes') or 0:.0f} changes in {med('burst_seconds'):.1f} s)")
print("the agent held the cluster's latest revision after every burst:",
      all(r["agent_revision"] >= r["cluster_revision"] for r in rs))
PY
