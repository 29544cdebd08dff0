#!/usr/bin/env bash
# image_check.sh: build the modelfleet image with podman and run it as a user would (docs/deploy.md, "What was
# verified here"). Needs root, podman and this checkout's .venv (the demo repository and the test clients:
# numpy, tritonclient[grpc]). Not part of `make test`: it builds an image and runs seven containers.
#
#   benchmarks/image_check.sh              build (--no-cache), then every check
#   MF_NO_BUILD=1 benchmarks/image_check.sh   check the image already tagged $MF_IMAGE
#   MF_TORCH=1 ...                         also try the WITH_TORCH=1 build (needs download.pytorch.org)
#
# Without `localhost/python:3.11-slim-bookworm` it first builds a stand-in for the official base from Debian
# packages (debootstrap, python3.11 in /usr/bin; no registry is needed). Prints PASS/FAIL per check and INFO
# lines (sizes, times, versions); exits 1 when a check failed. Its containers and volume are removed on exit.
#
# Engine settings, for a root podman 4.3 on a VM with hybrid cgroups (v1 controllers + cgroup2 mounted) and
# no CAP_SYS_RESOURCE: crun refuses hybrid cgroups, so runc (MF_RUNTIME); podman's default rlimits (nofile and
# nproc raised to 1M and 4M) cannot be set, so the host's hard nofile and nproc=32768 (MF_NOFILE, MF_NPROC).
# Health-check timers need systemd, absent here: `--health-interval disable`; `podman healthcheck run` still
# runs the image's HEALTHCHECK. MF_CA_BUNDLE (default the host's bundle, "" for none) is mounted over the build
# containers' CA bundle so pip trusts a TLS-intercepting proxy; nothing of it ends up in the image.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
IMAGE="${MF_IMAGE:-modelfleet:0.1.0}"
BASE="${MF_BASE:-localhost/python:3.11-slim-bookworm}"
PY="${MF_PYTHON:-$ROOT/.venv/bin/python}"
RUNTIME="${MF_RUNTIME:-runc}"
ULIMITS=(--ulimit "nofile=${MF_NOFILE:-$(ulimit -Hn)}:${MF_NOFILE:-$(ulimit -Hn)}" --ulimit "nproc=${MF_NPROC:-32768}:${MF_NPROC:-32768}")
CA_BUNDLE="${MF_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
TENANTS="${MF_TENANTS:-20}"
READY_S=120 # the image's HEALTHCHECK start period
TAG="mfcheck-$$"
WORK="$(mktemp -d /var/tmp/mfcheck.XXXXXX)"
FAILURES=0

cleanup() {
    local c
    for c in $(podman ps -a --filter "name=^$TAG-" --format '{{.Names}}'); do pm rm -f -v -t 0 "$c" >/dev/null || true; done
    podman volume rm -f "$TAG-cache" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
source "$ROOT/benchmarks/servers.sh" # free_port

# podman with this machine's settings; drops the lines about systemd health-check timers
pm() { podman --runtime "$RUNTIME" "$@" 2> >(grep -v 'unable to get systemd connection' >&2 || true); }
info() { echo "INFO $*"; }
# check NAME FUNCTION [ARGS]: PASS or FAIL with what the function printed. Checks return non-zero themselves
# (errexit does not apply inside an `if`).
check() {
    local name="$1" out
    shift
    if out="$("$@" 2>&1)"; then
        echo "PASS $name${out:+: $out}"
    else
        echo "FAIL $name${out:+: $out}"
        FAILURES=$((FAILURES + 1))
    fi
}
# wait_container URL CONTAINER: poll URL until it answers 200, for at most READY_S seconds, or until the
# container exits (servers.sh's wait_ready polls a URL only)
wait_container() {
    local deadline=$((SECONDS + READY_S))
    while ((SECONDS < deadline)); do
        curl -sf -o /dev/null "$1" && return 0
        [[ "$(podman inspect "$2" --format '{{.State.Running}}')" == true ]] || { echo "$2 exited: $(podman logs "$2" 2>&1 | tail -3)"; return 1; }
        sleep 0.2
    done
    echo "$1 not ready after ${READY_S} s"
    return 1
}
run_detached() { pm run -d --health-interval disable "${ULIMITS[@]}" --read-only --tmpfs /tmp "$@" >/dev/null; }

build_base() {
    # A stand-in for the official python:3.11-slim-bookworm: Debian's own CPython 3.11 in /usr/bin (the
    # official image builds CPython from source into /usr/local), python and python3 linked in /usr/local/bin.
    local rootfs="$WORK/rootfs"
    command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap"; return 1; }
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
        || { tail -3 "$WORK/debootstrap.log"; return 1; }
    cat >"$rootfs/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    chroot "$rootfs" /bin/sh -c 'export DEBIAN_FRONTEND=noninteractive; apt-get update -q \
        && apt-get install -y -q --no-install-recommends python3.11 python3.11-venv ca-certificates \
        && apt-get clean && rm -rf /var/lib/apt/lists/*' >"$WORK/base-apt.log" 2>&1 || { tail -3 "$WORK/base-apt.log"; return 1; }
    ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"
    ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
    # the host's name and resolver stay out (the engine mounts its own); no docs, as in the slim image
    : >"$rootfs/etc/hostname"
    : >"$rootfs/etc/resolv.conf"
    rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/apt/*
    tar -C "$rootfs" -c . | podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >"$WORK/import.log" 2>&1 \
        || { tail -3 "$WORK/import.log"; return 1; }
    rm -rf "$rootfs"
    echo "$BASE from Debian packages"
}

build_image() {
    local args=(--format docker --no-cache --network host "${ULIMITS[@]}" --build-arg "PYTHON_IMAGE=$BASE" -t "$1")
    shift
    [[ -n "$CA_BUNDLE" && -r "$CA_BUNDLE" ]] && args+=(-v "$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
    pm build "${args[@]}" "$@" "$ROOT"
}

timed_build() { # timed_build LOG TAG [ARGS]: the build, its seconds on stdout
    local log="$1" start=$SECONDS
    shift
    build_image "$@" >"$log" 2>&1 || { grep -E '^ERROR: |NewConnectionError' "$log" | tail -2 | cut -c1-240; return 1; }
    echo "$((SECONDS - start)) s"
}

# -- V2 (no arguments): HTTP on 8000, gRPC on 8001 -------------------------------------------------------------

v2_identity_http() {
    curl -sf -X POST "http://127.0.0.1:$1/v2/models/identity/infer" -H 'content-type: application/json' \
        -d '{"inputs":[{"name":"input","datatype":"FP32","shape":[1,16],"data":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}]}' \
        | "$PY" -c 'import json, sys; out = json.load(sys.stdin)["outputs"][0]; assert out["data"] == list(range(16)), out; print("identity echoed 16 numbers")'
}

v2_adapter_http() { # an adapter (tenant) over minilm-base: its weights are blobs in the repository's .blobs/
    curl -s -X POST "http://127.0.0.1:$1/v2/models/tenant-00001/infer" -H 'content-type: application/json' -d \
        '{"inputs":[{"name":"input_ids","datatype":"INT64","shape":[1,6],"data":[101,2023,2003,2307,999,102]},
          {"name":"attention_mask","datatype":"INT64","shape":[1,6],"data":[1,1,1,1,1,1]}]}' \
        | "$PY" -c '
import json, math, sys
doc = json.load(sys.stdin)
assert "outputs" in doc, doc
out = doc["outputs"][0]
assert out["shape"] == [1, 2] and all(math.isfinite(v) for v in out["data"]), out
print("tenant-00001 logits", [round(v, 3) for v in out["data"]])'
}

v2_identity_grpc() {
    "$PY" - "127.0.0.1:$1" <<'PY'
import sys
import numpy as np
import tritonclient.grpc as grpcclient
client = grpcclient.InferenceServerClient(sys.argv[1])
x = np.arange(16, dtype=np.float32).reshape(1, 16)
tensor = grpcclient.InferInput("input", [1, 16], "FP32")
tensor.set_data_from_numpy(x)
y = client.infer("identity", [tensor]).as_numpy("output")
assert np.array_equal(x, y), y
print("identity over gRPC (tritonclient) echoed 16 numbers")
PY
}

runs_as_10001() {
    local top status
    top="$(podman top "$1" huser user args | sed -n 2p)"
    status="$(pm exec "$1" grep -E '^(Uid|Gid):' /proc/1/status | tr -s '\t\n ' ' ')"
    [[ "$top" == 10001*modelfleet*"modelfleet serve /models"* && "$status" == "Uid: 10001 10001 10001 10001 Gid: 10001 10001 10001 10001"* ]] \
        || { echo "top: $top; $status"; return 1; }
    echo "PID 1 is 'modelfleet serve /models', uid and gid 10001"
}

healthy() {
    pm healthcheck run "$1" >/dev/null || { echo "podman healthcheck run: not healthy"; return 1; }
    local state
    state="$(podman inspect "$1" --format '{{.State.Health.Status}}')"
    [[ "$state" == healthy ]] || { echo "state $state"; return 1; }
    echo "healthy ($(pm exec "$1" cat /tmp/modelfleet-health-url))"
}

writes_only_tmp_and_cache() { # writes_only_tmp_and_cache CONTAINER [MOUNT_POINT ...]
    local path denied=() allowed=() engine='/etc|/etc/hosts|/etc/hostname|/etc/resolv\.conf' c="$1"
    shift
    for path in "$@"; do # the engine creates a volume's mount point (and its parents) in the container's layer
        while [[ -n "$path" && "$path" != / ]]; do
            engine+="|${path//./\\.}"
            path="$(dirname "$path")"
        done
    done
    set -- "$c"
    for path in /etc /opt/modelfleet /usr/local/bin /var/cache /models /; do
        pm exec "$1" touch "$path/.mfcheck" 2>/dev/null && { echo "$path is writable"; return 1; }
        denied+=("$path")
    done
    for path in /tmp /var/cache/modelfleet; do
        pm exec "$1" sh -c "touch $path/.mfcheck && rm $path/.mfcheck" || { echo "$path is not writable"; return 1; }
        allowed+=("$path")
    done
    # the container's own layer: only the engine's mount points (/etc/hosts, /etc/hostname, /etc/resolv.conf, volumes)
    local changed
    changed="$(podman diff "$1" | grep -v -E "^[AC] ($engine)\$" || true)"
    [[ -z "$changed" ]] || { echo "podman diff: $(tr '\n' ' ' <<<"$changed")"; return 1; }
    echo "read-only: ${denied[*]}; writable: ${allowed[*]}; podman diff: only the engine's mount points"
}

stops_on_sigterm() {
    local start=$SECONDS code
    pm stop -t 30 "$1" >/dev/null
    code="$(podman inspect "$1" --format '{{.State.ExitCode}}')"
    [[ "$code" == 0 || "$code" == 143 ]] || { echo "exit code $code"; return 1; }
    ((SECONDS - start <= 10)) || { echo "took $((SECONDS - start)) s"; return 1; }
    grep -q 'shutting down: in-flight calls have' <<<"$(podman logs "$1" 2>&1)" || { echo "no drain in the log"; return 1; }
    echo "exit code $code within $((SECONDS - start)) s, drained"
}

# -- SageMaker --------------------------------------------------------------------------------------------------

sagemaker_single() { # sagemaker_single HOST_PORT CONTAINER_PORT
    curl -sf "http://127.0.0.1:$1/ping" >/dev/null || { echo "/ping"; return 1; }
    curl -sf "http://127.0.0.1:$1/invocations" -H 'content-type: application/json' \
        -d '{"instances": [[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]]}' \
        | "$PY" -c 'import json, sys; doc = json.load(sys.stdin); assert doc == {"predictions": [list(range(16))]}, doc' \
        || return 1
    local log
    log="$(podman logs "$3" 2>&1)"
    grep -q "Uvicorn running on http://0.0.0.0:$2 " <<<"$log" || { echo "not on port $2"; return 1; }
    if grep -q "gRPC" <<<"$log"; then
        echo "gRPC is on"
        return 1
    fi
    echo "/ping 200, /invocations without a target header, listening on $2 only"
}

mme_load_and_invoke() { # POST /models (our layout and a bare model.onnx), invoke by target header, list, unload
    local base="http://127.0.0.1:$1" name id
    for spec in "tenant-a.tar.gz a1b2c3" "bare-b d4e5f6"; do
        read -r name id <<<"$spec"
        curl -sf -X POST "$base/models" -H 'content-type: application/json' \
            -d "{\"model_name\": \"$name\", \"url\": \"/opt/ml/models/$id/model\"}" >/dev/null || { echo "POST /models $name"; return 1; }
    done
    for name in tenant-a.tar.gz bare-b; do
        curl -sf "$base/invocations" -H "X-Amzn-SageMaker-Target-Model: $name" -H 'content-type: application/json' \
            -d '{"instances": [[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]]}' \
            | "$PY" -c 'import json, sys; doc = json.load(sys.stdin); assert doc == {"predictions": [list(range(16))]}, doc' \
            || { echo "invocation of $name"; return 1; }
    done
    curl -sf "$base/models" | "$PY" -c '
import json, sys
urls = {m["modelName"]: m["modelUrl"] for m in json.load(sys.stdin)["models"]}
assert urls == {"tenant-a.tar.gz": "/opt/ml/models/a1b2c3/model", "bare-b": "/opt/ml/models/d4e5f6/model"}, urls' || return 1
    curl -sf -X DELETE "$base/models/bare-b" >/dev/null || { echo "DELETE /models/bare-b"; return 1; }
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$base/invocations" -H 'X-Amzn-SageMaker-Target-Model: bare-b' \
        -H 'content-type: application/json' -d '{"instances": [[0]]}')" == 404 ]] || { echo "bare-b still answers"; return 1; }
    echo "2 models loaded from /opt/ml/models, invoked by X-Amzn-SageMaker-Target-Model, listed, 1 unloaded"
}

post_models() { # post_models PORT [KEY]: POST /models' status
    local key=()
    [[ -n "${2:-}" ]] && key=(-H "X-Api-Key: $2")
    curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$1/models" -H 'content-type: application/json' \
        "${key[@]}" -d '{"model_name": "m", "url": "/opt/ml/models/a1b2c3/model"}'
}

# Through a bridge network the peer is the bridge's gateway, not loopback: control needs the admin key.
mme_control_from_a_bridge_network() { # PORT_WITHOUT_ADMIN_KEY PORT_WITH_ADMIN_KEY KEY
    local code
    code="$(post_models "$1")"
    [[ "$code" == 403 ]] || { echo "no admin key configured: $code, expected 403"; return 1; }
    code="$(post_models "$2")"
    [[ "$code" == 401 ]] || { echo "admin key configured, none sent: $code, expected 401"; return 1; }
    code="$(post_models "$2" "$3")"
    [[ "$code" == 200 ]] || { echo "with the admin key: $code"; return 1; }
    echo "POST /models from the host through the bridge: 403 (no admin key configured), 401 (none sent), 200 (sent)"
}

given_command() {
    grep -q -- --sagemaker <<<"$(pm run --rm "${ULIMITS[@]}" --read-only "$IMAGE" modelfleet serve --help)" \
        || { echo "no --sagemaker in the help"; return 1; }
    echo "ran as given, not as a server"
}

main() {
    info "$(date -u +%FT%TZ), nproc $(nproc), $(lscpu | grep 'Model name' | tr -s ' '), $(podman --version), runtime $RUNTIME $("$RUNTIME" --version | head -1 | awk '{print $3}')"
    if ! podman image exists "$BASE"; then
        local start=$SECONDS
        check "base stand-in (debootstrap, apt-get, podman import)" build_base
        ((FAILURES == 0)) || exit 1
        info "base stand-in built in $((SECONDS - start)) s"
    fi
    info "base $BASE: $(podman run --rm --runtime "$RUNTIME" "${ULIMITS[@]}" "$BASE" python -c 'import sys; print(sys.version.split()[0], sys.executable)')"

    if [[ -z "${MF_NO_BUILD:-}" ]]; then
        check "podman build $IMAGE (--no-cache)" timed_build "$WORK/build.log" "$IMAGE"
        ((FAILURES == 0)) || exit 1
    fi
    if [[ -n "${MF_TORCH:-}" ]]; then
        check "podman build --build-arg WITH_TORCH=1" timed_build "$WORK/build-torch.log" "$IMAGE-torch-check" --build-arg WITH_TORCH=1
        podman rmi -f "$IMAGE-torch-check" >/dev/null 2>&1 || true
    fi
    podman image prune -f >/dev/null
    local size base_size
    size="$(podman image inspect "$IMAGE" --format '{{.Size}}')"
    base_size="$(podman image inspect "$BASE" --format '{{.Size}}')"
    info "image $IMAGE $((size / 1000000)) MB, base $((base_size / 1000000)) MB, added $(((size - base_size) / 1000000)) MB"
    podman image ls --format 'INFO podman image ls: {{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "${IMAGE%%:*}|python" || true

    local repo="${MF_REPO:-$WORK/repo}"
    if [[ -z "${MF_REPO:-}" ]]; then
        "$ROOT/.venv/bin/modelfleet" demo-repo "$repo" --tenants "$TENANTS" >"$WORK/demo-repo.log" 2>&1 \
            || { echo "FAIL modelfleet demo-repo: $(tail -3 "$WORK/demo-repo.log")"; exit 1; }
    fi
    info "repository $repo: $(find "$repo" -mindepth 1 -maxdepth 1 -not -name '.*' | wc -l) models"

    # (a) the V2 server as in docs/deploy.md: read-only root, /tmp tmpfs, a cache volume, the repository read-only
    local http grpc c="$TAG-v2"
    http="$(free_port)" grpc="$(free_port)"
    podman volume create "$TAG-cache" >/dev/null
    run_detached --name "$c" -v "$TAG-cache:/var/cache/modelfleet" -v "$repo:/models:ro" \
        -p "127.0.0.1:$http:8000" -p "127.0.0.1:$grpc:8001" "$IMAGE"
    local start=$EPOCHREALTIME
    check "V2 server ready (GET /v2/health/ready on 8000)" wait_container "http://127.0.0.1:$http/v2/health/ready" "$c"
    info "ready $(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $start}") s after podman run -d returned"
    check "V2 inference over HTTP (identity)" v2_identity_http "$http"
    check "V2 inference over HTTP (adapter over a shared base, weight blobs)" v2_adapter_http "$http"
    check "V2 inference over gRPC on 8001" v2_identity_grpc "$grpc"
    check "runs as uid 10001" runs_as_10001 "$c"
    check "HEALTHCHECK (podman healthcheck run)" healthy "$c"
    check "writes only /tmp and the cache volume" writes_only_tmp_and_cache "$c"
    check "SIGTERM (podman stop) ends it promptly" stops_on_sigterm "$c"

    # (b) SageMaker single model: `docker run IMAGE serve`, port 8080, then SAGEMAKER_BIND_TO_PORT
    mkdir -p "$WORK/sm-single" "$WORK/sm-mme/a1b2c3/model" "$WORK/sm-mme/d4e5f6/model"
    cp -r "$repo/identity" "$WORK/sm-single/"
    local sm
    sm="$(free_port)"
    run_detached --name "$TAG-sm" -v "$WORK/sm-single:/opt/ml/model:ro" -p "127.0.0.1:$sm:8080" "$IMAGE" serve
    check "SageMaker serve ready on 8080 (/ping)" wait_container "http://127.0.0.1:$sm/ping" "$TAG-sm"
    check "SageMaker serve: /ping and /invocations on 8080" sagemaker_single "$sm" 8080 "$TAG-sm"
    check "SageMaker serve: HEALTHCHECK" healthy "$TAG-sm"
    check "SageMaker serve: SIGTERM" stops_on_sigterm "$TAG-sm"
    sm="$(free_port)"
    run_detached --name "$TAG-sm-port" -e SAGEMAKER_BIND_TO_PORT=9123 -v "$WORK/sm-single:/opt/ml/model:ro" \
        -p "127.0.0.1:$sm:9123" "$IMAGE" serve
    check "SageMaker serve ready on SAGEMAKER_BIND_TO_PORT=9123" wait_container "http://127.0.0.1:$sm/ping" "$TAG-sm-port"
    check "SageMaker serve: /ping and /invocations on SAGEMAKER_BIND_TO_PORT" sagemaker_single "$sm" 9123 "$TAG-sm-port"
    check "SageMaker serve (bind-to-port): HEALTHCHECK" healthy "$TAG-sm-port"

    # (c) SageMaker multi-model: artefacts under /opt/ml/models/<id>/model, loaded by POST /models. Host
    # networking (as on multi-container endpoints, whose containers share the host's ports): SageMaker's calls
    # come from loopback, the only peer that may control models without an admin key.
    cp -r "$repo/identity/." "$WORK/sm-mme/a1b2c3/model/"
    cp "$repo/identity/1/model.onnx" "$WORK/sm-mme/d4e5f6/model/"
    local mme
    mme="$(free_port)"
    run_detached --name "$TAG-mme" --network host -e SAGEMAKER_MULTI_MODEL=true -e "SAGEMAKER_BIND_TO_PORT=$mme" \
        -v "$WORK/sm-mme:/opt/ml/models:ro" "$IMAGE" serve
    check "SageMaker multi-model ready (host network, port $mme)" wait_container "http://127.0.0.1:$mme/ping" "$TAG-mme"
    check "SageMaker multi-model: load, invoke, list, unload" mme_load_and_invoke "$mme"
    check "SageMaker multi-model: HEALTHCHECK" healthy "$TAG-mme"
    check "SageMaker multi-model: writes only /tmp and the cache volume" writes_only_tmp_and_cache "$TAG-mme" /opt/ml/models
    check "SageMaker multi-model: SIGTERM" stops_on_sigterm "$TAG-mme"
    local key keyed
    key="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')"
    mme="$(free_port)" keyed="$(free_port)"
    run_detached --name "$TAG-mme-bridge" -e SAGEMAKER_MULTI_MODEL=true \
        -v "$WORK/sm-mme:/opt/ml/models:ro" -p "127.0.0.1:$mme:8080" "$IMAGE" serve
    run_detached --name "$TAG-mme-keyed" -e SAGEMAKER_MULTI_MODEL=true -e "MODELFLEET_ADMIN_KEY=$key" \
        -v "$WORK/sm-mme:/opt/ml/models:ro" -p "127.0.0.1:$keyed:8080" "$IMAGE" serve
    check "SageMaker multi-model ready (bridge network)" wait_container "http://127.0.0.1:$mme/ping" "$TAG-mme-bridge"
    check "SageMaker multi-model ready (bridge network, admin key)" wait_container "http://127.0.0.1:$keyed/ping" "$TAG-mme-keyed"
    check "SageMaker multi-model: control from a bridge network" mme_control_from_a_bridge_network "$mme" "$keyed" "$key"

    # (d) the `anything else` form
    check "runs a given command (modelfleet serve --help)" given_command

    if ((FAILURES > 0)); then
        echo "$FAILURES check(s) failed"
        exit 1
    fi
    echo "all checks passed"
}

main "$@"
