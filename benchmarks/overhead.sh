#!/usr/bin/env bash
# overhead.sh [ROUNDS] [SECONDS]: server overhead on `identity` against the in-stack limit.
# In alternating rounds, wrk (1 thread, 8 connections, the same binary-extension request bytes)
# drives (a) benchmarks/trivial_target.py, a raw ASGI app under the same uvicorn stack answering a fixed
# body, and (b) `modelfleet serve` running `identity` (ONNX Runtime, 1 intra-op thread).
# Prints each round and the medians; the issue's target is (b) >= 25 % of (a).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${1:-3}"; SECONDS_PER_RUN="${2:-10}"
PY="$ROOT/.venv/bin/python"
WORK="$(mktemp -d)"; trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT
source "$ROOT/benchmarks/identity_fixture.sh"; identity_fixture "$WORK" "$PY"
source "$ROOT/benchmarks/servers.sh"
P_RAW=$(free_port); P_MF=$(free_port)
"$PY" "$ROOT/benchmarks/trivial_target.py" --port "$P_RAW" >/dev/null 2>&1 & echo $! >"$WORK/raw.pid"
"$ROOT/.venv/bin/modelfleet" serve "$WORK/repo" --port "$P_MF" --grpc-port 0 --intra-op-threads 1 --log-level warning \
  >"$WORK/mf.log" 2>&1 & echo $! >"$WORK/mf.pid"
wait_ready "http://127.0.0.1:$P_RAW/v2/health/ready" 100; wait_ready "http://127.0.0.1:$P_MF/v2/health/ready" 100
run() { wrk -t1 -c8 -d"${SECONDS_PER_RUN}s" -s "$WORK/bin.lua" "http://127.0.0.1:$1/v2/models/identity/infer" \
  | awk '/Requests\/sec/ {print $2} /Non-2xx/ {print "ERRORS " $0 > "/dev/stderr"}'; }
run "$P_RAW" >/dev/null; run "$P_MF" >/dev/null   # warm-up
echo "date $(date -u +%FT%TZ), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | sed 's/\t//'), loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
raw=(); mf=()
for i in $(seq "$ROUNDS"); do
  r=$(run "$P_RAW"); m=$(run "$P_MF"); raw+=("$r"); mf+=("$m")
  echo "round $i: raw ASGI $r req/s, modelfleet identity $m req/s"
done
"$PY" - "${raw[*]}" "${mf[*]}" <<'PY'
import statistics, sys
raw = [float(x) for x in sys.argv[1].split()]; mf = [float(x) for x in sys.argv[2].split()]
a, b = statistics.median(raw), statistics.median(mf)
print(f"median: raw ASGI {a:,.0f} req/s, modelfleet identity {b:,.0f} req/s = {100 * b / a:.1f} % of raw")
PY
