"""The fleet's router: an nginx configuration that sends `/v2/models/{name}/...` (and gRPC calls by
their `x-model-name` header) to the server group holding the model, over keep-alive upstreams.

Every address is an `upstream` block resolved once when nginx starts; requests pick the block by
name through a `map`, so no request ever waits on DNS (seed 002: 1,536 -> 6,230 req/s on the same
instances once its front stopped resolving per request). Kubernetes and `modelfleet cluster` both
render their router from `render_nginx`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from modelfleet.config import is_model_name

_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_ADDRESS = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")
_LISTEN = re.compile(r"(?:(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\]):)?[0-9]{1,5}")
_UPSTREAM_PREFIX = "mf-"
# The captured name uses the repository's own rule, so nothing else reaches a map lookup or a reply.
_MODEL_PATH = r"^/v2/models/(?<mf_name>[A-Za-z0-9][A-Za-z0-9._-]{0,127})(?:/|$)"
HEALTH_PATHS = ("/v2/health/live", "/v2/health/ready")
GRPC_MODEL_HEADER = "x-model-name"
# map's own keywords: a model of that name is written with a leading backslash
_MAP_KEYWORDS = frozenset({"default", "hostnames", "include", "volatile"})


class RouterConfigError(ValueError):
    """The routing table cannot be rendered: the message names the model, group or address."""


def render_nginx(
    routes: Mapping[str, str],
    upstreams: Mapping[str, Sequence[str]],
    *,
    listen: str,
    grpc_listen: str | None,
    grpc_upstreams: Mapping[str, Sequence[str]] | None = None,
    default_group: str | None = None,
    keepalive: int = 64,
    max_body_bytes: int = 64 * 1024 * 1024,
    worker_processes: int | None = None,
) -> str:
    """nginx's `events` and `http` blocks for a fleet: model name -> group, group -> addresses.

    routes: model name -> group name; upstreams: group name -> ["host:port", ...] (HTTP);
    listen: "8000" or "host:port" for HTTP; grpc_listen: the same for gRPC (HTTP/2), or None for
    no gRPC server, else grpc_upstreams gives each group's gRPC addresses. Calls that name no model
    (server metadata, repository index, metrics) and gRPC calls without the `x-model-name` header go
    to default_group (the first group by name when None); `/v2/health/{live,ready}` are answered by
    nginx itself; a model no group holds is a 404 with the JSON error envelope.

    worker_processes: nginx workers (None: one per CPU nginx sees, which in a container is the
    node's, not the pod's limit). The caller adds the main-context lines it needs (`daemon`, `pid`, `error_log`, `user`); the
    temporary folders are relative, so they land in the prefix given by `nginx -p`.
    """
    _check_table(routes, upstreams, "upstreams")
    default = _pick_default(upstreams, default_group)
    if keepalive < 1:
        raise RouterConfigError(f"keepalive must be at least 1 connection, not {keepalive}")
    if worker_processes is not None and worker_processes < 1:
        raise RouterConfigError(f"worker_processes must be at least 1, not {worker_processes}")
    lines = [
        f"worker_processes {worker_processes or 'auto'};",
        "events {",
        "    worker_connections 4096;",
        "}",
        "http {",
        *_indent(_http_settings(max_body_bytes, len(routes))),
    ]
    lines += _indent(_upstream_blocks(upstreams, "", keepalive))
    lines += _indent(_model_maps(routes, default))
    lines += _indent(_http_server(_check_listen(listen, "listen")))
    if grpc_listen is not None:
        if grpc_upstreams is None:
            raise RouterConfigError(
                "grpc_listen is set but grpc_upstreams is not: give each group's gRPC addresses"
            )
        _check_table(routes, grpc_upstreams, "grpc_upstreams")
        if set(grpc_upstreams) != set(upstreams):
            raise RouterConfigError(
                f"grpc_upstreams names groups {sorted(grpc_upstreams)}, upstreams names {sorted(upstreams)}: "
                "each group needs both"
            )
        lines += ["", *_indent(_upstream_blocks(grpc_upstreams, "-grpc", keepalive))]
        lines += _indent(_grpc_map(routes, default))
        lines += _indent(_grpc_server(_check_listen(grpc_listen, "grpc_listen")))
    lines.append("}")
    return "\n".join(lines) + "\n"


def upstream_name(group: str, grpc: bool = False) -> str:
    """The nginx upstream block that stands for a group (`mf-<group>`, `mf-<group>-grpc`)."""
    return f"{_UPSTREAM_PREFIX}{group}{'-grpc' if grpc else ''}"


def _check_table(routes: Mapping[str, str], upstreams: Mapping[str, Sequence[str]], what: str) -> None:
    if not upstreams:
        raise RouterConfigError(f"{what} is empty: the router needs at least one server group")
    for group, addresses in upstreams.items():
        if not _GROUP.fullmatch(group):
            raise RouterConfigError(
                f"group name {group[:64]!r} is not usable: letters, digits, '.', '_' and '-', at most 63"
            )
        if isinstance(addresses, str) or not addresses:
            raise RouterConfigError(f"group {group!r} in {what} needs a list of 'host:port' addresses")
        for address in addresses:
            if not _ADDRESS.fullmatch(address) or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
                raise RouterConfigError(f"group {group!r}: address {address[:80]!r} is not 'host:port'")
    for model, group in routes.items():
        if not is_model_name(model):
            raise RouterConfigError(f"model name {model[:64]!r} is not a valid model name")
        if group not in upstreams:
            raise RouterConfigError(
                f"model {model!r} is routed to group {group!r}, which {what} does not list"
            )


def _pick_default(upstreams: Mapping[str, Sequence[str]], default_group: str | None) -> str:
    if default_group is None:
        return min(upstreams)
    if default_group not in upstreams:
        raise RouterConfigError(
            f"default_group {default_group!r} is not one of the groups {sorted(upstreams)}"
        )
    return default_group


def _check_listen(value: str, what: str) -> str:
    if not _LISTEN.fullmatch(value) or not 0 < int(value.rsplit(":", 1)[-1]) < 65536:
        raise RouterConfigError(f"{what} {value[:80]!r} is not a port or 'host:port'")
    return value


def _indent(lines: Sequence[str]) -> list[str]:
    return [f"    {line}" if line else "" for line in lines]


def _http_settings(max_body_bytes: int, models: int) -> list[str]:
    # thousands of models: the map's hash must be allowed to grow past nginx's 2048 default
    hash_size = max(2048, 1 << (2 * models).bit_length())
    return [
        f"map_hash_max_size {hash_size};",
        "map_hash_bucket_size 256;",
        "access_log off;",
        "server_tokens off;",
        "default_type application/json;",
        # relative to the prefix (`nginx -p`), never the distribution's /var/lib/nginx: runs as non-root
        "client_body_temp_path client_body_temp;",
        "proxy_temp_path proxy_temp;",
        f"client_max_body_size {max_body_bytes};",
        "client_body_buffer_size 1m;",
        "keepalive_timeout 75s;",
        "keepalive_requests 100000;",
        "",
    ]


def _upstream_blocks(upstreams: Mapping[str, Sequence[str]], suffix: str, keepalive: int) -> list[str]:
    lines: list[str] = []
    for group in sorted(upstreams):
        lines.append(f"upstream {_UPSTREAM_PREFIX}{group}{suffix} {{")
        lines += [f"    server {address};" for address in upstreams[group]]
        lines += [
            f"    keepalive {keepalive};",
            # a fresh connection now and then spreads the load over pods added behind a Service
            "    keepalive_requests 1000;",
            "    keepalive_timeout 60s;",
            "}",
        ]
    lines.append("")
    return lines


def _model_maps(routes: Mapping[str, str], default: str) -> list[str]:
    lines = [
        "map $uri $mf_model {",
        f'    "~{_MODEL_PATH}" $mf_name;',
        '    default "";',
        "}",
        "map $mf_model $mf_upstream {",
        f'    "" "{upstream_name(default)}";',
        '    default "";',
    ]
    lines += [f'    "{_map_key(model)}" "{upstream_name(routes[model])}";' for model in sorted(routes)]
    lines += ["}", ""]
    return lines


def _http_server(listen: str) -> list[str]:
    location_body = [
        "    proxy_pass http://$mf_upstream;",
        "    proxy_http_version 1.1;",
        '    proxy_set_header Connection "";',
        "    proxy_set_header Host $host;",
        "    add_header X-Modelfleet-Group $mf_upstream always;",
    ]
    return [
        "server {",
        f"    listen {listen};",
        *[f"    location = {path} {{ return 200; }}" for path in HEALTH_PATHS],
        "    location / {",
        '        if ($mf_upstream = "") {',
        '            return 404 "{\\"error\\": \\"model \'$mf_model\' is not served by this fleet\\"}\\n";',
        "        }",
        *[f"    {line}" for line in location_body],
        "    }",
        "}",
    ]


def _map_key(model: str) -> str:
    return f"\\{model}" if model in _MAP_KEYWORDS else model


def _grpc_map(routes: Mapping[str, str], default: str) -> list[str]:
    lines = [
        "map $http_x_model_name $mf_grpc_upstream {",
        f'    default "{upstream_name(default, grpc=True)}";',
    ]
    lines += [
        f'    "{_map_key(model)}" "{upstream_name(routes[model], grpc=True)}";' for model in sorted(routes)
    ]
    lines += ["}", ""]
    return lines


def _grpc_server(listen: str) -> list[str]:
    return [
        "server {",
        f"    listen {listen} http2;",
        "    location / {",
        "        grpc_pass grpc://$mf_grpc_upstream;",
        "    }",
        "}",
    ]
