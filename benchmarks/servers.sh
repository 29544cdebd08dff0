# Sourced by the benchmark shell scripts (overhead.sh, overhead_ab.sh, batching_ab.sh, recommend_check.sh,
# window_spread.sh, image_check.sh); PY must name the checkout's .venv python.
# free_port: a free TCP port on 127.0.0.1.
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_ready URL [TRIES]: poll URL every 0.2 s until it answers 2xx (TRIES times, 300 by default); 1 if it never does.
wait_ready() { for _ in $(seq "${2:-300}"); do curl -sf -o /dev/null "$1" && return 0; sleep 0.2; done; return 1; }
# minilm_repo SRC DEST: DEST/minilm-sentiment as in the model repository SRC (a demo-repo), its config copied (so
# that `recommend --apply` edits the copy) and its version 1 hard-linked (copied across file systems).
minilm_repo() {
  local m="$2/minilm-sentiment"; rm -rf "$m"; mkdir -p "$m/1"; cp "$1/minilm-sentiment/config.yaml" "$m/"
  ln "$1/minilm-sentiment/1/"* "$m/1/" 2>/dev/null || cp "$1/minilm-sentiment/1/"* "$m/1/"
}
# wait_server URL LOG [TRIES]: wait_ready, else say so with the end of the server's LOG; 1 if it never answered.
wait_server() { wait_ready "$1" "${3:-300}" || { echo "the server at $1 did not start:"; tail -5 "$2"; return 1; }; }
