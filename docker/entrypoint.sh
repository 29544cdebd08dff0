#!/bin/sh
# The modelfleet image's entrypoint: which server to run, decided from the arguments and environment.
#
#   (no arguments)        modelfleet serve "$MODELFLEET_REPOSITORY" (default /models): V2 on 8000, gRPC on 8001
#   -OPTION ...           the same, with these `modelfleet serve` options
#   serve [-OPTION ...]   SageMaker's `docker run IMAGE serve`: --sagemaker, port SAGEMAKER_BIND_TO_PORT or 8080,
#                         no gRPC; repository /opt/ml/model, or with SAGEMAKER_MULTI_MODEL=true an empty staging
#                         folder under /tmp that POST /models fills from /opt/ml/models
#   healthcheck           exit 0 when the running server answers GET /v2/health/ready with 200
#   anything else         run as given (`modelfleet plan ...`, `sh`)
#
# Only /tmp (and the model cache volume) are written, so the root filesystem may be read-only.
set -eu

HEALTH_FILE="${TMPDIR:-/tmp}/modelfleet-health-url"

is_true() {
    case "$(printf '%s' "${1:-}" | tr '[:upper:]' '[:lower:]')" in
        1 | true | yes | on) return 0 ;;
        *) return 1 ;;
    esac
}

# The URL the health check polls; written where the check (a separate process) can read it.
note_health_url() {
    printf 'http://127.0.0.1:%s/v2/health/ready\n' "$1" > "$HEALTH_FILE" 2>/dev/null || true
}

# The HTTP port among `modelfleet serve` options (--port N, --port=N, -p N), else $1.
port_of() {
    port="$1"
    shift
    while [ "$#" -gt 0 ]; do
        case "$1" in
            --port | -p) [ "$#" -gt 1 ] && port="$2" ;;
            --port=*) port="${1#*=}" ;;
        esac
        shift
    done
    printf '%s' "$port"
}

sagemaker() {
    export MODELFLEET_SAGEMAKER=true
    # SageMaker routes only its own port to the container; gRPC stays off unless asked for
    export MODELFLEET_GRPC_PORT="${MODELFLEET_GRPC_PORT:-0}"
    if is_true "${SAGEMAKER_MULTI_MODEL:-}"; then
        repository="${MODELFLEET_REPOSITORY:-${TMPDIR:-/tmp}/modelfleet/repository}"
        mkdir -p "$repository"
    else
        repository="${MODELFLEET_REPOSITORY:-/opt/ml/model}"
    fi
    note_health_url "$(port_of "${MODELFLEET_HTTP_PORT:-${SAGEMAKER_BIND_TO_PORT:-8080}}" "$@")"
    exec modelfleet serve "$repository" "$@"
}

v2() {
    note_health_url "$(port_of "${MODELFLEET_HTTP_PORT:-8000}" "$@")"
    exec modelfleet serve "${MODELFLEET_REPOSITORY:-/models}" "$@"
}

healthcheck() {
    if [ -r "$HEALTH_FILE" ]; then
        url="$(cat "$HEALTH_FILE")"
    elif is_true "${MODELFLEET_SAGEMAKER:-}" || [ -n "${SAGEMAKER_BIND_TO_PORT:-}" ]; then
        url="http://127.0.0.1:${MODELFLEET_HTTP_PORT:-${SAGEMAKER_BIND_TO_PORT:-8080}}/v2/health/ready"
    else
        url="http://127.0.0.1:${MODELFLEET_HTTP_PORT:-8000}/v2/health/ready"
    fi
    exec python -c '
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as answer:
        sys.exit(0 if answer.status == 200 else 1)
except Exception as exc:
    print(f"not ready: {exc}", file=sys.stderr)
    sys.exit(1)
' "$url"
}

if [ "$#" -eq 0 ]; then
    v2
fi
case "$1" in
    serve)
        shift
        sagemaker "$@"
        ;;
    healthcheck)
        healthcheck
        ;;
    -*)
        v2 "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
