# Shared by the benchmark scripts: build the release binaries (the node and the load tools,
# switchyard-bench) and start a 3-node Switchyard cluster on loopback ports BASE+1..BASE+3 with
# data under $WORK. Source it; it defines BIN, BENCH, WORK, PIDS, cleanup (on EXIT) and
# start_switchyard BASE (which sets SY_EP; with HTTP_BASE set, node i also serves its HTTP
# listener, metrics and OFREP, on HTTP_BASE+i).
cargo build --release -q -p switchyard -p switchyard-bench
# SWITCHYARD_BIN runs the nodes from another build (to compare two builds in the same way).
BIN=${SWITCHYARD_BIN:-target/release/switchyard}
BENCH=target/release/switchyard-bench
WORK=$(mktemp -d)
PIDS=()
# Kills the nodes and waits for them to be gone: a node holding many connections takes
# seconds to exit, and the next cluster binds the same ports.
stop_nodes() {
  local p
  for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]:-}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
# KEEP_WORK=1 keeps the nodes' data and logs (the path is printed).
cleanup() { stop_nodes; if [ -n "${KEEP_WORK:-}" ]; then echo "node logs: $WORK" >&2; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

start_switchyard() {
  local base=$1 ic="" i
  SY_EP=""
  for i in 1 2 3; do
    ic+="${ic:+,}$i=127.0.0.1:$((base + i))"
    SY_EP+="${SY_EP:+,}127.0.0.1:$((base + i))"
  done
  rm -rf "$WORK"/sy1 "$WORK"/sy2 "$WORK"/sy3
  for i in 1 2 3; do
    local http=""
    [ -n "${HTTP_BASE:-}" ] && http="--metrics-listen 127.0.0.1:$((HTTP_BASE + i))"
    # shellcheck disable=SC2086
    RUST_LOG=warn "$BIN" serve ${SERVE_ARGS:-} $http --id $i --listen 127.0.0.1:$((base + i)) --data-dir "$WORK/sy$i" \
      --initial-cluster "$ic" 2>"$WORK/sy$i.log" &
    PIDS+=($!)
  done
  for _ in $(seq 100); do
    "$BIN" --endpoints "$SY_EP" status --output json 2>/dev/null | grep -q '"role": "leader"' && return
    sleep 0.2
  done
  echo "switchyard did not start" >&2
  exit 1
}

# Adds N learners (ids 4..) to the cluster start_switchyard started on BASE, on ports
# BASE+4... (with HTTP_BASE, HTTP on HTTP_BASE+4...); sets LEARNER_EP to their addresses.
add_learners() {
  local base=$1 n=$2 i id
  LEARNER_EP=""
  for i in $(seq "$n"); do
    id=$((3 + i))
    rm -rf "$WORK/sy$id"
    local http=""
    [ -n "${HTTP_BASE:-}" ] && http="--metrics-listen 127.0.0.1:$((HTTP_BASE + id))"
    # shellcheck disable=SC2086
    RUST_LOG=warn "$BIN" serve ${SERVE_ARGS:-} $http --id $id --listen 127.0.0.1:$((base + id)) --data-dir "$WORK/sy$id" \
      --join 2>"$WORK/sy$id.log" &
    PIDS+=($!)
    local added=""
    for _ in $(seq 50); do
      "$BIN" --endpoints "$SY_EP" member add-learner $id 127.0.0.1:$((base + id)) >/dev/null 2>&1 && added=1 && break
      sleep 0.2
    done
    # Joined is not yet serving: wait until it answers as a learner.
    for _ in $(seq 100); do
      [ -n "$added" ] || break
      "$BIN" --endpoints 127.0.0.1:$((base + id)) status --output json 2>/dev/null | grep -q '"role": "learner"' && break
      sleep 0.1
    done
    if [ -z "$added" ] || ! "$BIN" --endpoints 127.0.0.1:$((base + id)) status >/dev/null 2>&1; then
      echo "learner $id did not join; its log:" >&2
      cat "$WORK/sy$id.log" >&2
      exit 1
    fi
    LEARNER_EP+="${LEARNER_EP:+,}127.0.0.1:$((base + id))"
  done
}
