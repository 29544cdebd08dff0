#!/usr/bin/env bash
# overhead_ab.sh TREE_A TREE_B [ROUNDS] [SECONDS]: which of two source trees serves `identity` for less CPU.
# Both trees' `modelfleet serve` (PYTHONPATH=TREE/src, this checkout's .venv) run at once, pinned to CPU 1,
# each driven by its own wrk (1 thread, 8 connections, overhead.sh's binary-extension request) pinned to
# CPU 0, at the same time: both servers always have work, so the kernel splits CPU 1 evenly between them
# and the ratio of their request rates is the inverse ratio of their CPU per request, under the same
# machine state (the overhead.sh ratios move 1.7x between runs minutes apart on a shared machine).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"; PY="$ROOT/.venv/bin/python"
A="$(cd "$1" && pwd)"; B="$(cd "$2" && pwd)"; ROUNDS="${3:-4}"; SECONDS_PER_RUN="${4:-8}"
W="$(mktemp -d)"; trap 'kill $(cat "$W"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$W"' EXIT
source "$ROOT/benchmarks/identity_fixture.sh"; PYTHONPATH="$B/src" identity_fixture "$W" "$PY"
source "$ROOT/benchmarks/servers.sh"
for v in a b; do
  T="$A"; [ $v = b ] && T="$B"
  P=$(free_port); echo "$P" >"$W/$v.port"
  PYTHONPATH="$T/src" taskset -c 1 "$ROOT/.venv/bin/modelfleet" serve "$W/repo" --port "$P" --grpc-port 0 \
    --intra-op-threads 1 --log-level warning >"$W/$v.log" 2>&1 & echo $! >"$W/$v.pid"
done
for v in a b; do wait_server "http://127.0.0.1:$(cat "$W/$v.port")/v2/health/ready" "$W/$v.log" 150; done
load() { # $1 seconds: both wrk at once; prints "a_rate b_rate"
  for v in a b; do taskset -c 0 wrk -t1 -c8 -d"$1s" -s "$W/bin.lua" "http://127.0.0.1:$(cat "$W/$v.port")/v2/models/identity/infer" >"$W/$v.wrk" & echo $! >"$W/$v.wpid"; done
  wait "$(cat "$W/a.wpid")" "$(cat "$W/b.wpid")"
  ! grep -h "Non-2xx" "$W"/*.wrk >&2
  echo "$(awk '/Requests\/sec/{print $2}' "$W/a.wrk") $(awk '/Requests\/sec/{print $2}' "$W/b.wrk")"
}
load 2 >/dev/null   # warm-up
echo "date $(date -u +%FT%TZ), nproc $(nproc), $(grep -m1 'model name' /proc/cpuinfo | sed 's/\t//'), A=$A, B=$B"
for i in $(seq "$ROUNDS"); do
  read -r a b <<<"$(load "$SECONDS_PER_RUN")"
  echo "round $i ($(date -u +%T), loadavg $(cut -d' ' -f1 /proc/loadavg)): A $a req/s, B $b req/s, B/A $("$PY" -c "print(round($b/$a, 3))")"
done
