#!/usr/bin/env bash
# OFREP on one node of a 3-node cluster on this machine: single and bulk evaluations from
# CONCURRENCY clients (default 32) over HTTP/1.1 keep-alive, beside the same single
# evaluations over flagd.evaluation.v1 gRPC, ROUNDS rounds (default 3) on a fresh cluster each;
# and SSE_CLIENTS Server-Sent Events clients (default 1,000) that refetch the bulk evaluation
# on each message: the time from a change's effective_at to each having the new answer.
#
#   benches/ofrep.sh
#   ROUNDS=1 SECONDS_PER=3 SSE_CLIENTS=200 benches/ofrep.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-5}
CONCURRENCY=${CONCURRENCY:-32}
SSE_CLIENTS=${SSE_CLIENTS:-1000}
CHANGES=${CHANGES:-5}
# shellcheck source=benches/lib.sh
. benches/lib.sh
ulimit -n 65536 2>/dev/null || true
OUT=$(mktemp -d)
for r in $(seq "$ROUNDS"); do
  base=$((18300 + 20 * r))
  HTTP_BASE=$((base + 10)) SERVE_ARGS="--limit-rate 0" start_switchyard "$base"
  echo "round $r/$ROUNDS" >&2
  "$BENCH" --endpoints "$SY_EP" --output json ofrep --http "127.0.0.1:$((base + 11))" \
    --grpc "127.0.0.1:$((base + 1))" --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER" \
    --sse-clients "$SSE_CLIENTS" --changes "$CHANGES" > "$OUT/ofrep-$r.json"
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
results = [json.load(open(f"{out}/ofrep-{r}.json")) for r in range(1, rounds + 1)]
names = [run["name"] for run in results[0]["runs"]]
print(f"medians of {rounds} rounds")
print(f"{'run':24} {'evaluations/s':>14} {'p50 ms':>8} {'p99 ms':>8}")
med = {}
for i, name in enumerate(names):
    runs = [res["runs"][i] for res in results]
    m = {k: statistics.median(r[k] for r in runs) for k in ("per_second", "p50_ms", "p99_ms")}
    med[name] = m
    print(f"{name:24} {m['per_second']:14.0f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f}")
single, grpc = med.get("OFREP single"), med.get("flagd v1 gRPC single")
if single and grpc:
    print(f"OFREP single / gRPC: throughput {single['per_second'] / grpc['per_second']:.2f}, p99 {single['p99_ms'] / grpc['p99_ms']:.2f}")
sse = [res["sse"] for res in results]
print(f"SSE, {sse[0]['clients']} clients: effective_at to refetched p50 {statistics.median(s['p50_ms'] for s in sse):.1f} ms, "
      f"p99 {statistics.median(s['p99_ms'] for s in sse):.1f} ms, max {max(s['max_ms'] for s in sse):.1f} ms; "
      f"early {sum(s['early'] for s in sse)}, missed {sum(s['missed'] for s in sse)}")
PY
