#!/usr/bin/env bash
# recommend_check.sh B D I T [ROUNDS] [OUT] [MODEL_REPO]: issue 13's "the recommendation is true" check.
# Each round: `modelfleet profile` of one configuration of minilm-sentiment at sequence 32 (max batch B,
# queue delay D µs, I instances, T intra-op threads; SLO 100 ms, the default margin and final step) on
# a scratch copy of the model (weights hard-linked from MODEL_REPO, default /tmp/demo3k), `recommend
# --rate 500 --apply --json`, then a fresh `modelfleet serve` of the applied config and a separate 20 s
# `modelfleet bench` at the recommendation's own capacity step (`concurrency`, `capacity_per_s`).
# Prints per round the ramp, the prediction, the bench and whether it is within ±10 % and the SLO.
# The code measured is this checkout's, or PYTHONPATH=TREE/src for another tree.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"; PY="$ROOT/.venv/bin/python"
B=$1; D=$2; I=$3; T=$4; N=${5:-3}; W=${6:-$(mktemp -d)}; SRC=${7:-/tmp/demo3k}
mkdir -p "$W"; V="$W/repo"; M="$V/minilm-sentiment"
source "$ROOT/benchmarks/servers.sh"; minilm_repo "$SRC" "$V"
SP=""; trap '[ -n "$SP" ] && kill "$SP" 2>/dev/null || true' EXIT
echo "nproc $(nproc); $(lscpu | grep 'Model name' | tr -s ' '); results in $W"
for i in $(seq 1 "$N"); do
  echo "== round $i $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" -m modelfleet profile "$V" minilm-sentiment --seq-lens 32 --batch-sizes "$B" --delays-us "$D" \
    --instances "$I" --threads "$T" --slo-ms 100 --no-chart 2>&1 | tail -1
  cp "$M/1/profile.json" "$W/profile$i.json"
  "$PY" -m modelfleet recommend "$V" minilm-sentiment --rate 500 --seq-len 32 --instance-type c7i.large \
    --apply --json >"$W/rec$i.json" 2>"$W/rec$i.err" || { cat "$W/rec$i.err"; continue; }
  C=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['recommendations'][0]['concurrency'])" "$W/rec$i.json")
  PORT=$(free_port)
  "$PY" -m modelfleet serve "$V" --port "$PORT" --grpc-port 0 --startup-load all >"$W/serve$i.log" 2>&1 & SP=$!
  wait_server "http://127.0.0.1:$PORT/v2/models/minilm-sentiment/ready" "$W/serve$i.log"
  "$PY" -m modelfleet bench --url "http://127.0.0.1:$PORT" -m minilm-sentiment --seq-len 32 -c "$C" -d 20 \
    --warmup 2 --instance-type c7i.large --report "$W/bench$i.json" >/dev/null 2>&1
  kill "$SP"; wait "$SP" 2>/dev/null || true; SP=""
  "$PY" - "$W/bench$i.json" "$W/rec$i.json" "$W/profile$i.json" "$i" <<'PY'
import json, sys
bench, rec, profile = (json.load(open(p)) for p in sys.argv[1:4])
r, m = rec["recommendations"][0], profile["measurements"][0]
ramp = " ".join(f"c{s['concurrency']}:{s['throughput_per_s']:.0f}/{s['p90_ms']:.0f}" for s in m["steps"] if s["p90_ms"])
got, pred, p90 = bench["requests_per_s"], r["capacity_per_s"], bench["latency_ms"]["p90"]
within = abs(got / pred - 1) <= 0.10 and p90 <= profile["slo"]["p90_ms"]
print(
    f"round {sys.argv[4]}: {r['config']} ramp (/s / P90 ms) {ramp}, final {m.get('final')}; predicted {pred:.1f}/s"
    f" at c={r['concurrency']} (P90 {r['latency_at_capacity_ms']:.1f} ms); bench {got:.1f}/s ({(got / pred - 1) * 100:+.1f} %),"
    f" P90 {p90:.1f} ms, errors {bench['errors']['total']}; within ±10 % and the SLO: {within}"
)
PY
done
