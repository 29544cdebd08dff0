#!/usr/bin/env bash
# compare.sh [ROUNDS] [SECONDS]: modelfleet and the peer servers of the shared side-by-side harness
# (../shared/bench/peers, README.md there) measured in the same run, one server at a time.
#
# For each round, for each server (modelfleet mlserver litserve bentoml torchserve ray): start it
# (modelfleet through ./serve.sh, a peer through its own serve.sh), check both models against
# ONNX Runtime in-process (load.py check), record the RSS/PSS of its processes (proctree.py mem),
# a closed-loop wrk load at c=8 for SECONDS (+1 s unrecorded warm-up) on identity, then on minilm
# (load.py run --json), stop it (stop.sh). One line per server per round, then the medians over
# rounds. A server that fails to start or answers wrongly is reported and skipped.
# Raw records (one JSON object per server per round, load.py's JSON embedded as is) go to
# $PEERS_ROOT/run/compare-<UTC time>.jsonl.
#
# Knobs (environment): SERVERS (space-separated subset/order), BASE_PORT (default 18600; server i
# gets BASE_PORT + 10*i, so TorchServe's PORT..PORT+2 and MLServer's PORT+1 never collide),
# CONCURRENCY (default 8), SETTLE_S (pause after each stop, default 3). PEER_THREADS and
# EXTRA_MODELS come from the harness (common.sh): keep PEER_THREADS=1, its default.
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEERS_DIR="${PEERS_DIR:-$(cd "$ROOT/.." && pwd)/shared/bench/peers}"
# shellcheck source=/dev/null
source "$PEERS_DIR/common.sh"   # PEERS_ROOT, RUN_DIR, PEER_THREADS, ... (it turns on set -e)
set +e

ROUNDS="${1:-3}"; SECS="${2:-10}"
SERVERS="${SERVERS:-modelfleet mlserver litserve bentoml torchserve ray}"
BASE_PORT="${BASE_PORT:-18600}"; CONC="${CONCURRENCY:-8}"; SETTLE_S="${SETTLE_S:-3}"
PYM="$PEERS_ROOT/venv-models/bin/python"   # load.py check needs ONNX Runtime for the reference
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$RUN_DIR/compare-$STAMP.jsonl"
LOGDIR="$RUN_DIR/compare-$STAMP.logs"; mkdir -p "$LOGDIR"
[ -x "$PYM" ] || { echo "no $PYM: run $PEERS_DIR/setup_models.sh first" >&2; exit 1; }
command -v wrk >/dev/null || echo "warning: wrk not found, load.py falls back to its Python client" >&2

# ---- cleanup: stop whatever this script started, by its recorded pid ----
STARTED=()   # pid files of servers started and not yet stopped
stop_server() {
  local pidfile="$1"
  [ -f "$pidfile" ] || return 0
  local root; root="$(cat "$pidfile")"
  "$PEERS_DIR/stop.sh" "$pidfile" >>"$LOGDIR/stop.log" 2>&1
  # anything of that session/tree still around (stop.sh SIGKILLs after 20 s, so rarely)
  local left; left="$(PYTHONPATH="$PEERS_DIR" python3 -c 'import sys, proctree as t
print(" ".join(str(p) for p in t.pids(int(sys.argv[1])) if not t._zombie(p)))' "$root" 2>/dev/null)"
  if [ -n "$left" ]; then
    echo "  leftover processes after stop: $left" >&2
    STOP_WAIT=5 python3 "$PEERS_DIR/proctree.py" stop "$root" >>"$LOGDIR/stop.log" 2>&1
  fi
}
cleanup() {
  local f
  for f in "${STARTED[@]}"; do stop_server "$f"; done
  STARTED=()
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

ports_free() {  # ports_free PORT...: 0 when nothing listens on any of them (127.0.0.1 or any address)
  local p
  for p in "$@"; do
    if ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; then return 1; fi
  done
  return 0
}

json_get() {  # json_get 'JSON' key -> value (empty when missing)
  python3 -c 'import json,sys
try: print(json.loads(sys.argv[1]).get(sys.argv[2], ""))
except Exception: print("")' "$1" "$2"
}

# ---- the machine line ----
LOADAVG0="$(cut -d' ' -f1-3 /proc/loadavg)"
CPU="$(grep -m1 'model name' /proc/cpuinfo | sed 's/^model name[[:space:]]*:[[:space:]]*//')"
MF_REV="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
MF_DIRTY="$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | awk '{print $2}' | paste -sd, -)"
# (GNU nproc honours OMP_NUM_THREADS, which common.sh sets to PEER_THREADS: ask without it)
MACHINE="$(date -u) | nproc $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) | $CPU | loadavg at start $LOADAVG0"
CONFIG="rounds=$ROUNDS seconds=$SECS c=$CONC warmup=1s PEER_THREADS=$PEER_THREADS EXTRA_MODELS=${EXTRA_MODELS:-none} servers: $SERVERS | modelfleet $MF_REV${MF_DIRTY:+ (modified: $MF_DIRTY)}"
echo "machine: $MACHINE"
echo "config:  $CONFIG"
python3 - "$MACHINE" "$CONFIG" "$RESULTS" <<'EOF'
import json, sys
with open(sys.argv[3], "a") as f:
    f.write(json.dumps({"kind": "header", "machine": sys.argv[1], "config": sys.argv[2]}) + "\n")
EOF

serve_script() {
  case "$1" in
    modelfleet) echo "$HERE/serve.sh" ;;
    *) echo "$PEERS_DIR/$1/serve.sh" ;;
  esac
}
peer_of() { [ "$1" = modelfleet ] && echo v2 || echo "$1"; }

# record ROUND SERVER STATUS key=value... (values JSON when they parse as JSON, else strings)
record() {
  python3 - "$RESULTS" "$@" <<'EOF'
import json, sys
out, rnd, server, status, *kv = sys.argv[1:]
rec = {"kind": "result", "round": int(rnd), "server": server, "status": status}
for item in kv:
    k, _, v = item.partition("=")
    try:
        rec[k] = json.loads(v)
    except ValueError:
        rec[k] = v
with open(out, "a") as f:
    f.write(json.dumps(rec) + "\n")
EOF
}

fmt_load() {  # fmt_load 'load.py JSON' -> "1234.5 req/s p50 1.23 p99 4.56 err 0"
  python3 -c 'import json,sys
try:
    r = json.loads(sys.argv[1]); print("{:8.1f} req/s p50 {:6.2f} p99 {:7.2f} err {}".format(r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]))
except Exception: print("    (no result)")' "$1"
}

run_one() {  # run_one ROUND INDEX SERVER
  local rnd="$1" idx="$2" s="$3" port pidfile peer log ready chk mem procs rss pss la
  port=$((BASE_PORT + 10 * idx)); peer="$(peer_of "$s")"
  pidfile="$RUN_DIR/compare-$s.pid"; log="$LOGDIR/r$rnd-$s"
  local t=0
  until ports_free "$port" $((port + 1)) $((port + 2)); do
    if ((t >= 30)); then
      echo "round $rnd $(printf '%-10s' "$s") SKIPPED: port $port..$((port + 2)) busy" | tee -a "$LOGDIR/summary.txt"
      record "$rnd" "$s" port_busy port="$port"; return 1
    fi
    sleep 1; t=$((t + 1))
  done
  rm -f "$pidfile"
  STARTED+=("$pidfile")
  "$(serve_script "$s")" "$port" "$pidfile" >"$log.serve.txt" 2>&1
  local rc=$?
  ready="$(grep -o 'ready_s=[0-9.]*' "$log.serve.txt" | tail -1 | cut -d= -f2)"
  if [ "$rc" -ne 0 ] || [ -z "$ready" ]; then
    local why; why="$(tail -n 5 "$log.serve.txt" | tr '\n' ' ' | cut -c1-400)"
    echo "round $rnd $(printf '%-10s' "$s") FAILED TO START (rc $rc): $why (see $log.serve.txt)" | tee -a "$LOGDIR/summary.txt"
    record "$rnd" "$s" start_failed port="$port" rc="$rc" why="$why"
    stop_server "$pidfile"; return 1
  fi
  chk="$("$PYM" "$PEERS_DIR/load.py" check --peer "$peer" --port "$port" 2>&1)"; rc=$?
  echo "$chk" >"$log.check.txt"
  if [ "$rc" -ne 0 ]; then
    echo "round $rnd $(printf '%-10s' "$s") CHECK FAILED: $(echo "$chk" | tr '\n' ' ' | cut -c1-400)" | tee -a "$LOGDIR/summary.txt"
    record "$rnd" "$s" check_failed port="$port" ready_s="$ready" check="$chk"
    stop_server "$pidfile"; return 1
  fi
  mem="$(python3 "$PEERS_DIR/proctree.py" mem "$(cat "$pidfile")" 2>&1)"
  echo "$mem" >"$log.mem.txt"
  procs="$(echo "$mem" | grep -o 'procs=[0-9]*' | cut -d= -f2)"
  rss="$(echo "$mem" | grep -o 'rss_mib=[0-9.]*' | cut -d= -f2)"
  pss="$(echo "$mem" | grep -o 'pss_mib=[0-9.]*' | cut -d= -f2)"
  la="$(cut -d' ' -f1 /proc/loadavg)"
  local m out res=()
  declare -A R=()
  for m in identity minilm; do
    out="$(python3 "$PEERS_DIR/load.py" run --peer "$peer" --port "$port" --model "$m" \
      -c "$CONC" -d "$SECS" --warmup 1 --json 2>"$log.$m.err")"
    R[$m]="$(echo "$out" | grep '^{' | tail -1)"
    [ -n "${R[$m]}" ] || R[$m]='null'
  done
  stop_server "$pidfile"
  record "$rnd" "$s" ok port="$port" ready_s="$ready" procs="${procs:-null}" rss_mib="${rss:-null}" \
    pss_mib="${pss:-null}" loadavg1_before_load="$la" identity="${R[identity]}" minilm="${R[minilm]}"
  printf 'round %s %-10s ready %6ss procs %2s pss %7s MiB | identity %s | minilm %s\n' \
    "$rnd" "$s" "$ready" "$procs" "$pss" "$(fmt_load "${R[identity]}")" "$(fmt_load "${R[minilm]}")" \
    | tee -a "$LOGDIR/summary.txt"
}

for ((r = 1; r <= ROUNDS; r++)); do
  i=0
  for s in $SERVERS; do
    run_one "$r" "$i" "$s"
    # drop the stopped server's pid file from the cleanup list
    keep=(); for f in "${STARTED[@]}"; do [ -f "$f" ] && keep+=("$f"); done; STARTED=("${keep[@]}")
    i=$((i + 1))
    sleep "$SETTLE_S"
  done
done

echo
echo "machine: $MACHINE"
echo "config:  $CONFIG"
python3 - "$RESULTS" "$SERVERS" <<'EOF'
import json, statistics, sys
path, order = sys.argv[1], sys.argv[2].split()
recs = [json.loads(l) for l in open(path) if l.strip()]
res = [r for r in recs if r.get("kind") == "result"]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"\nmedians over rounds (n = rounds with a result; errors = median, [sum])")
hdr = (f"{'server':<11}{'n':>2} {'ready_s':>7} {'procs':>5} {'PSS MiB':>8} | {'identity req/s':>14} {'p50 ms':>7} {'p99 ms':>7} {'err':>9}"
       f" | {'minilm req/s':>12} {'p50 ms':>7} {'p99 ms':>7} {'err':>9}")
print(hdr); print("-" * len(hdr))
rows = {}
for s in order:
    ok = [r for r in res if r["server"] == s and r["status"] == "ok"]
    bad = [r for r in res if r["server"] == s and r["status"] != "ok"]
    cells = []
    for m in ("identity", "minilm"):
        runs = [r[m] for r in ok if isinstance(r.get(m), dict)]
        rps, p50, p99 = (med([x[k] for x in runs]) for k in ("rps", "p50_ms", "p99_ms"))
        errs = [x["errors"] for x in runs]
        rows.setdefault(s, {})[m] = rps
        cells.append(f"{rps:>{14 if m == 'identity' else 12}.1f} {p50:>7.2f} {p99:>7.2f} {str(med(errs)) + ' [' + str(sum(errs)) + ']':>9}")
    ready = med([float(r["ready_s"]) for r in ok])
    procs = med([r["procs"] for r in ok if isinstance(r.get("procs"), (int, float))])
    pss = med([r["pss_mib"] for r in ok if isinstance(r.get("pss_mib"), (int, float))])
    print(f"{s:<11}{len(ok):>2} {ready:>7.2f} {procs:>5} {pss:>8.1f} | {cells[0]} | {cells[1]}")
    for r in bad:
        print(f"{'':<11}   round {r['round']}: {r['status']} {str(r.get('why', r.get('check', '')))[:200]}")
if "modelfleet" in rows:
    base = rows["modelfleet"]
    print("\nmodelfleet median req/s relative to each server's median (>1: modelfleet faster)")
    for s in order:
        if s == "modelfleet" or s not in rows:
            continue
        rel = "  ".join(f"{m} {base[m] / rows[s][m]:.2f}x" if rows[s][m] == rows[s][m] and rows[s][m] else f"{m} n/a"
                        for m in ("identity", "minilm"))
        print(f"  vs {s:<11} {rel}")
EOF
echo
echo "results: $RESULTS"
echo "logs:    $LOGDIR"
