#!/usr/bin/env bash
# batching_ab.sh TREE_A TREE_B [ROUNDS] [SEQ] [MODEL_REPO]: which of two source trees batches MiniLM faster.
# Both trees' `modelfleet serve` (PYTHONPATH=TREE/src, this checkout's .venv) serve a repository holding only
# `minilm-sentiment` (hard-linked from MODEL_REPO, default /tmp/demo3k) at the same time, each driven by its
# own `modelfleet bench -c 32` closed loop started together: under the same machine state the ratio of their
# served rates (B/A) is what separate batching.py runs cannot give on a shared machine (its in-process limit
# moves 3x between runs minutes apart). The tree started first swaps each round. Prints one line per round.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"; PY="$ROOT/.venv/bin/python"
A="$(cd "$1" && pwd)"; B="$(cd "$2" && pwd)"; ROUNDS="${3:-4}"; SEQ="${4:-32}"; SRC="${5:-/tmp/demo3k}"
W="$(mktemp -d)"; trap 'kill $(cat "$W"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$W"' EXIT
source "$ROOT/benchmarks/servers.sh"; minilm_repo "$SRC" "$W/repo"
for r in $(seq "$ROUNDS"); do
  order="a b"; [ $((r % 2)) = 0 ] && order="b a"
  for v in $order; do
    T="$A"; [ $v = b ] && T="$B"; P=$(free_port); echo "$P" >"$W/$v.port"
    PYTHONPATH="$T/src" "$PY" -m modelfleet serve "$W/repo" --port "$P" --grpc-port 0 --startup-load all \
      --log-level warning >"$W/$v.log" 2>&1 & echo $! >"$W/$v.pid"
  done
  for v in a b; do wait_server "http://127.0.0.1:$(cat "$W/$v.port")/v2/models/minilm-sentiment/ready" "$W/$v.log"; done
  echo -n "round $r $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg), $order first: "
  for v in $order; do
    "$PY" -m modelfleet bench --url "http://127.0.0.1:$(cat "$W/$v.port")" -m minilm-sentiment --seq-len "$SEQ" \
      -c 32 -d 20 --warmup 3 --report "$W/$v.json" >/dev/null 2>&1 & echo $! >"$W/$v.bpid"
  done
  wait "$(cat "$W/a.bpid")" "$(cat "$W/b.bpid")"
  kill "$(cat "$W/a.pid")" "$(cat "$W/b.pid")"; wait "$(cat "$W/a.pid")" "$(cat "$W/b.pid")" 2>/dev/null || true
  "$PY" - "$W/a.json" "$W/b.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
cell = lambda r: f"{r['requests_per_s']:.1f}/s P50 {r['latency_ms']['p50']:.0f} ms errors {r['errors']['total']}"
print(f"A {cell(a)}; B {cell(b)}; B/A {b['requests_per_s'] / a['requests_per_s']:.3f}")
PY
done
