#!/usr/bin/env bash
# The cost of TLS (with mutual TLS between nodes) and authentication: the put benchmark (1, 16,
# 64 clients) and watch fan-out at 10,000 subscribers, on a plain 3-node cluster and on one with
# TLS and authentication on (every call carrying a token), alternating in each round.
#
#   benches/security.sh
#   ROUNDS=3 SECONDS_PER=5 SUBSCRIBERS=10000 CHANGES=10 benches/security.sh
#   FANOUT=0 ROUNDS=5 benches/security.sh          # the put benchmark alone
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER=${SECONDS_PER:-5}
CLIENTS=${CLIENTS:-1,16,64}
SUBSCRIBERS=${SUBSCRIBERS:-10000}
CHANGES=${CHANGES:-10}
FANOUT=${FANOUT:-1}
# shellcheck source=benches/lib.sh
. benches/lib.sh
ulimit -n 65536 2>/dev/null || true

"$BIN" certs --out "$WORK/certs" --host 127.0.0.1,localhost --nodes 1 >/dev/null
TLS_ARGS="--tls-cert $WORK/certs/node-1.pem --tls-key $WORK/certs/node-1-key.pem --peer-ca $WORK/certs/ca.pem"
OUT=$(mktemp -d)

run_mode() { # mode round base
  local mode=$1 r=$2 base=$3
  if [ "$mode" = secure ]; then
    export SWITCHYARD_CA="$WORK/certs/ca.pem"
    SERVE_ARGS="$TLS_ARGS" start_switchyard "$base"
    SWITCHYARD_TOKEN=$("$BIN" --endpoints "$SY_EP" --output json auth token create --name bench --role admin \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    export SWITCHYARD_TOKEN
    "$BIN" --endpoints "$SY_EP" auth enable >/dev/null
  else
    unset SWITCHYARD_CA SWITCHYARD_TOKEN
    SERVE_ARGS="" start_switchyard "$base"
  fi
  echo "round $r/$ROUNDS: $mode put" >&2
  "$BENCH" --endpoints "$SY_EP" --output json put --clients "$CLIENTS" --seconds "$SECONDS_PER" > "$OUT/put-$mode-$r.json"
  if [ "$FANOUT" = 1 ]; then
    echo "round $r/$ROUNDS: $mode fanout ($SUBSCRIBERS subscribers)" >&2
    local pids
    pids=$(IFS=,; echo "${PIDS[*]}")
    "$BENCH" --endpoints "$SY_EP" --output json fanout --subscribers "$SUBSCRIBERS" --changes "$CHANGES" \
      --server-pids "$pids" > "$OUT/fanout-$mode-$r.json"
  fi
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
  unset SWITCHYARD_CA SWITCHYARD_TOKEN
}

base=18100
for r in $(seq "$ROUNDS"); do
  run_mode plain "$r" $base
  run_mode secure "$r" $((base + 10))
  base=$((base + 20))
done

python3 - "$OUT" "$ROUNDS" "$FANOUT" <<'PY'
import json, statistics, sys, os
d, rounds, fanout = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
med = statistics.median
def put(mode):
    rows = {}
    for r in range(1, rounds + 1):
        for row in json.load(open(os.path.join(d, f"put-{mode}-{r}.json"))):
            rows.setdefault(row["clients"], []).append(row)
    return rows
def fan(mode):
    out = []
    for r in range(1, rounds + 1):
        v = json.load(open(os.path.join(d, f"fanout-{mode}-{r}.json")))
        out.append(v[0] if isinstance(v, list) else v)
    return out
p, s = put("plain"), put("secure")
# Two ratios: of the medians, and the median of each round's own ratio (the two modes of a
# round ran back to back, so a round the machine was busy for weighs on both sides alike).
print(f"{'clients':>7} | {'plain w/s':>9} {'p99 ms':>7} | {'TLS+auth w/s':>12} {'p99 ms':>7} | {'w/s ratio':>9} {'p99 ratio':>9} | {'paired w/s':>10} {'paired p99':>10}")
for c in sorted(p):
    pt, p99 = med(x["throughput_per_s"] for x in p[c]), med(x["p99_ms"] for x in p[c])
    st, s99 = med(x["throughput_per_s"] for x in s[c]), med(x["p99_ms"] for x in s[c])
    pw = med(b["throughput_per_s"] / a["throughput_per_s"] for a, b in zip(p[c], s[c]))
    pl = med(b["p99_ms"] / a["p99_ms"] for a, b in zip(p[c], s[c]))
    print(f"{c:>7} | {pt:>9.0f} {p99:>7.2f} | {st:>12.0f} {s99:>7.2f} | {st/pt:>9.2f} {s99/p99:>9.2f} | {pw:>10.2f} {pl:>10.2f}")
fp, fs = (fan("plain"), fan("secure")) if fanout else ([], [])
for k in ([] if not fanout else ["commit_lag_p50_ms", "commit_lag_p99_ms", "missing"]):
    a, b = med(x[k] for x in fp), med(x[k] for x in fs)
    ratio = f"{b/a:.2f}" if a else "-"
    print(f"fan-out {k}: plain {a:.1f}, TLS+auth {b:.1f}, ratio {ratio}")
print(f"(medians over {rounds} rounds, modes alternating; ratio = TLS+auth / plain; paired = median of the rounds' own ratios)")
PY
rm -rf "$OUT"
