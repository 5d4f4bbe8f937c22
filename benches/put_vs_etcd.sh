#!/usr/bin/env bash
# Toggle-write throughput and latency: a 3-node Switchyard cluster beside a 3-member etcd 3.4
# cluster, on this machine, same clients, concurrency and value size.
#
#   benches/put_vs_etcd.sh                 # 3 rounds x (1, 16, 64 clients) x 5 s each
#   ROUNDS=5 SECONDS_PER=10 benches/put_vs_etcd.sh
#
# Each round starts both clusters fresh (Switchyard, then etcd) so the two alternate on the same
# machine; the summary reports per-concurrency medians over the rounds and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-5}
CLIENTS=${CLIENTS:-1,16,64}
VALUE=${VALUE:-256}

if ! command -v etcd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
# shellcheck source=benches/lib.sh
. benches/lib.sh
ET_EP=127.0.0.1:12379,127.0.0.1:22379,127.0.0.1:32379

start_etcd() {
  local ic=e1=http://127.0.0.1:12380,e2=http://127.0.0.1:22380,e3=http://127.0.0.1:32380
  for i in 1 2 3; do
    etcd --name e$i --data-dir "$WORK/etcd$i" \
      --listen-client-urls http://127.0.0.1:${i}2379 --advertise-client-urls http://127.0.0.1:${i}2379 \
      --listen-peer-urls http://127.0.0.1:${i}2380 --initial-advertise-peer-urls http://127.0.0.1:${i}2380 \
      --initial-cluster $ic --initial-cluster-state new --log-level error 2>"$WORK/etcd$i.log" &
    PIDS+=($!)
  done
  for _ in $(seq 100); do
    curl -fsS http://127.0.0.1:12379/health 2>/dev/null | grep -q '"health":"true"' && return
    sleep 0.2
  done
  echo "etcd did not start" >&2; exit 1
}

stop_all() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
  rm -rf "$WORK"/sy* "$WORK"/etcd*
}

for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS: switchyard" >&2
  start_switchyard 17700
  "$BENCH" --endpoints "$SY_EP" --output json put --clients "$CLIENTS" --seconds "$SECONDS_PER" \
    --value-size "$VALUE" > "$WORK/../sy-round-$r.json"
  stop_all
  echo "round $r/$ROUNDS: etcd" >&2
  start_etcd
  "$BENCH" --endpoints $ET_EP --output json put --target etcd --clients "$CLIENTS" \
    --seconds "$SECONDS_PER" --value-size "$VALUE" > "$WORK/../etcd-round-$r.json"
  stop_all
done

python3 - "$WORK/.." "$ROUNDS" <<'PY'
import json, statistics, sys, os
d, rounds = sys.argv[1], int(sys.argv[2])
def load(prefix):
    rows = {}
    for r in range(1, rounds + 1):
        path = os.path.join(d, f"{prefix}-round-{r}.json")
        for row in json.load(open(path)):
            rows.setdefault(row["clients"], []).append(row)
        os.remove(path)
    return rows
sy, et = load("sy"), load("etcd")
med = lambda rows, k: statistics.median(x[k] for x in rows)
print(f"{'clients':>7} | {'switchyard w/s':>14} {'p50 ms':>7} {'p99 ms':>7} | {'etcd w/s':>9} {'p50 ms':>7} {'p99 ms':>7} | {'w/s ratio':>9} {'p99 ratio':>9}")
for c in sorted(sy):
    s_t, s_50, s_99 = med(sy[c], "throughput_per_s"), med(sy[c], "p50_ms"), med(sy[c], "p99_ms")
    e_t, e_50, e_99 = med(et[c], "throughput_per_s"), med(et[c], "p50_ms"), med(et[c], "p99_ms")
    print(f"{c:>7} | {s_t:>14.0f} {s_50:>7.2f} {s_99:>7.2f} | {e_t:>9.0f} {e_50:>7.2f} {e_99:>7.2f} | {s_t/e_t:>9.2f} {s_99/e_99:>9.2f}")
print(f"(medians over {rounds} rounds; ratio = switchyard / etcd; errors: switchyard "
      f"{sum(x['errors'] for v in sy.values() for x in v)}, etcd {sum(x['errors'] for v in et.values() for x in v)})")
PY
