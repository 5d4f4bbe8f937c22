#!/usr/bin/env bash
# Backup and restore at size: a 3-node cluster on this machine filled with FEATURES features
# and INSTANCES registered instances (default 10,000 each), then ROUNDS timed runs (default 5)
# of `switchyard snapshot save` against it and of `switchyard snapshot restore` into a fresh
# data directory; the last backup is restored into three members of a new cluster, which is
# started and must report the backup's revision and digest. Prints the medians.
#
#   benches/backup.sh
#   FEATURES=1000 INSTANCES=1000 ROUNDS=3 benches/backup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

FEATURES=${FEATURES:-10000}
INSTANCES=${INSTANCES:-10000}
ROUNDS=${ROUNDS:-5}
# shellcheck source=benches/lib.sh
. benches/lib.sh
start_switchyard 17900

"$BENCH" --endpoints "$SY_EP" load --features "$FEATURES" --instances "$INSTANCES"
seconds() { python3 -c 'import time; print(time.monotonic())'; }
SAVES=() RESTORES=()
for r in $(seq "$ROUNDS"); do
  t0=$(seconds)
  "$BIN" --endpoints "$SY_EP" snapshot save "$WORK/backup.snap" >/dev/null
  t1=$(seconds)
  rm -rf "$WORK/restored"
  "$BIN" snapshot restore "$WORK/backup.snap" --data-dir "$WORK/restored" 2>/dev/null
  t2=$(seconds)
  SAVES+=("$(python3 -c "print($t1 - $t0)")")
  RESTORES+=("$(python3 -c "print($t2 - $t1)")")
  echo "round $r: save ${SAVES[-1]:0:5} s, restore ${RESTORES[-1]:0:5} s" >&2
done
SIZE=$(stat -c %s "$WORK/backup.snap")
HEADER=$("$BIN" --output json snapshot inspect "$WORK/backup.snap")

# Restore the last backup into a new 3-node cluster and start it.
IC="" NEW_EP=""
for i in 1 2 3; do
  IC+="${IC:+,}$i=127.0.0.1:$((17950 + i))"
  NEW_EP+="${NEW_EP:+,}127.0.0.1:$((17950 + i))"
done
for i in 1 2 3; do
  "$BIN" snapshot restore "$WORK/backup.snap" --data-dir "$WORK/new$i" --id $i --initial-cluster "$IC" 2>/dev/null
  RUST_LOG=warn "$BIN" serve --id $i --listen 127.0.0.1:$((17950 + i)) --data-dir "$WORK/new$i" \
    --initial-cluster "$IC" 2>"$WORK/new$i.log" &
  PIDS+=($!)
done
STATUS=""
for _ in $(seq 100); do
  STATUS=$("$BIN" --endpoints "$NEW_EP" status --output json 2>/dev/null || true)
  echo "$STATUS" | grep -q '"role": "leader"' && break
  sleep 0.2
done

python3 - "$SIZE" "$HEADER" "$STATUS" "${SAVES[*]}" "${RESTORES[*]}" <<'PY'
import json, statistics, sys
size, header, status = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
saves = [float(x) for x in sys.argv[4].split()]
restores = [float(x) for x in sys.argv[5].split()]
print(f"backup: {header['features']} features, {header['instances']} instances, revision {header['revision']}, "
      f"{size / 1e6:.1f} MB on disk")
print(f"snapshot save    median {statistics.median(saves):.2f} s  (runs: {', '.join(f'{s:.2f}' for s in saves)})")
print(f"snapshot restore median {statistics.median(restores):.2f} s  (runs: {', '.join(f'{s:.2f}' for s in restores)})")
members = status.get("members", [])
agree = [m for m in members if m.get("digest") == header["digest"] and m.get("revision") == header["revision"]]
print(f"restored cluster: {len(agree)} of {len(members)} members at the backup's revision and digest")
sys.exit(0 if len(agree) == 3 else 1)
PY
