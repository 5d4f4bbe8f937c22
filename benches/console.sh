#!/usr/bin/env bash
# The operator console's costs on a 3-node cluster filled with 1,000 features and 10,000
# instances: time to first render in chromium (features page, and the instances page's first
# page), and node 1's CPU time and memory while 50 console pages follow it during a burst of
# 100 changes, beside the same burst with no page open (benches/console_bench.py).
#
#   benches/console.sh
#   ROUNDS=5 PAGES=50 CHANGES=100 FEATURES=1000 INSTANCES=10000 benches/console.sh
#
# Needs chromium, chromium-driver and Selenium in the venv .ci/run makes (target/ofvenv), or
# SWITCHYARD_PYTHON naming another python with Selenium.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
PAGES=${PAGES:-50}
CHANGES=${CHANGES:-100}
FEATURES=${FEATURES:-1000}
INSTANCES=${INSTANCES:-10000}
PYTHON=${SWITCHYARD_PYTHON:-target/ofvenv/bin/python}
# shellcheck source=benches/lib.sh
. benches/lib.sh
ulimit -n 65536 2>/dev/null || true

HTTP_BASE=18300 start_switchyard 18200
"$BENCH" --endpoints "$SY_EP" load --features "$FEATURES" --instances "$INSTANCES" >/dev/null
"$PYTHON" benches/console_bench.py --url http://127.0.0.1:18301 --rounds "$ROUNDS" --pages "$PAGES" \
  --changes "$CHANGES" --pid "${PIDS[0]}" --bin "$BIN" --endpoints "$SY_EP"
