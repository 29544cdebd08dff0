#!/usr/bin/env bash
# window_spread.sh [REPO] [SERVERS] [WINDOWS]: how far consecutive 10 s closed-loop windows (minilm-sentiment,
# seq 32, c=16, 2 s warm-up each) on one server spread, over a few freshly started servers; REPO holds
# minilm-sentiment with the configuration to test (default: recommend_check.sh's scratch copy). Issue 13's
# "within +-10 %" cannot be tighter than this spread.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"; PY="$ROOT/.venv/bin/python"; V=${1:-/tmp/rc-s6c/repo}; N=${2:-3}; K=${3:-4}
W="$(mktemp -d)"; SP=""; trap '[ -n "$SP" ] && kill "$SP" 2>/dev/null; rm -rf "$W"' EXIT
source "$ROOT/benchmarks/servers.sh"
for fresh in $(seq "$N"); do
  PORT=$(free_port)
  "$PY" -m modelfleet serve "$V" --port "$PORT" --grpc-port 0 --startup-load all >"$W/serve.log" 2>&1 & SP=$!
  wait_server "http://127.0.0.1:$PORT/v2/models/minilm-sentiment/ready" "$W/serve.log"
  line="server $fresh:"
  for w in $(seq "$K"); do
    "$PY" -m modelfleet bench --url "http://127.0.0.1:$PORT" -m minilm-sentiment --seq-len 32 -c 16 -d 10 --warmup 2 \
      --report "$W/w.json" >/dev/null 2>&1
    line="$line $("$PY" -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['requests_per_s']:.0f}/s\")" "$W/w.json")"
  done
  echo "$line (load $(cut -d' ' -f1 /proc/loadavg))"
  kill "$SP"; wait "$SP" 2>/dev/null || true; SP=""
done
