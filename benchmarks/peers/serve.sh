#!/usr/bin/env bash
# serve.sh PORT [PIDFILE]: modelfleet on 127.0.0.1:PORT, started like every peer of the shared
# side-by-side harness (../shared/bench/peers): the same models ($PEERS_ROOT/models, EXTRA_MODELS
# copies too), PEER_THREADS intra-op threads per model, setsid + pid file, returns once both
# models answer. The models are hard-linked into a repository (no config.yaml: modelfleet reads
# inputs, outputs and the batch dimension from the ONNX files).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$ROOT/../shared/bench/peers}"
source "$PEERS_DIR/common.sh"
PORT="${1:?usage: serve.sh PORT [PIDFILE]}"; PIDFILE="${2:-$RUN_DIR/modelfleet.pid}"
REPO="$RUN_DIR/modelfleet-$PORT"; rm -rf "$REPO"; mkdir -p "$REPO"
while read -r name file; do
  mkdir -p "$REPO/$name/1"
  ln "$file" "$REPO/$name/1/model.onnx" 2>/dev/null || cp "$file" "$REPO/$name/1/model.onnx"
done < <(model_list)
T0=$(date +%s.%N)
start_bg "$PIDFILE" "$RUN_DIR/modelfleet-$PORT.log" "$ROOT/.venv/bin/modelfleet" serve "$REPO" \
  --host 127.0.0.1 --port "$PORT" --grpc-port 0 --intra-op-threads "$PEER_THREADS" --log-level warning
wait_ready v2 "$PORT" "$PIDFILE" 120
