"""The router's nginx configuration (deploy/router.py): upstreams, the model map, gRPC, bad tables.

nginx itself reads these configurations in tests/integration/test_deploy_nginx.py."""

from __future__ import annotations

import re

import pytest

from modelfleet.deploy.router import RouterConfigError, render_nginx, upstream_name

UPSTREAMS = {"a": ["10.0.0.1:8000"], "b": ["10.0.0.2:8000", "svc-b.ns.svc.cluster.local:8000"]}
ROUTES = {"tenant-1": "a", "tenant-2": "b", "ranker": "b"}


def _block(text: str, head: str) -> str:
    start = text.index(head + " {")
    return text[start : text.index("}", start) + 1]


def _map_entries(text: str, head: str) -> dict[str, str]:
    return dict(re.findall(r'^\s+"([^"]*)" "([^"]*)";$', _block(text, head), re.MULTILINE))


def test_each_group_is_one_keepalive_upstream_with_its_addresses() -> None:
    text = render_nginx(ROUTES, UPSTREAMS, listen="8000", grpc_listen=None)
    for group, addresses in UPSTREAMS.items():
        block = _block(text, f"upstream {upstream_name(group)}")
        assert re.findall(r"server (\S+);", block) == addresses
        assert re.search(r"keepalive 64;", block)
    assert "resolver" not in text  # addresses are resolved once at start, never per request


def test_the_map_sends_each_model_to_its_groups_upstream() -> None:
    text = render_nginx(ROUTES, UPSTREAMS, listen="127.0.0.1:9000", grpc_listen=None)
    entries = _map_entries(text, "map $mf_model $mf_upstream")
    assert entries == {"": "mf-a", "ranker": "mf-b", "tenant-1": "mf-a", "tenant-2": "mf-b"}
    assert "listen 127.0.0.1:9000;" in text
    assert "proxy_pass http://$mf_upstream;" in text
    assert 'proxy_set_header Connection "";' in text  # HTTP/1.1 keep-alive to the upstream


def test_workers_follow_the_cpus_given_else_nginx_counts_them() -> None:
    assert "worker_processes auto;" in render_nginx(ROUTES, UPSTREAMS, listen="8000", grpc_listen=None)
    text = render_nginx(ROUTES, UPSTREAMS, listen="8000", grpc_listen=None, worker_processes=2)
    assert "worker_processes 2;" in text


def test_calls_without_a_model_go_to_the_chosen_default_group() -> None:
    text = render_nginx(ROUTES, UPSTREAMS, listen="8000", grpc_listen=None, default_group="b")
    assert _map_entries(text, "map $mf_model $mf_upstream")[""] == "mf-b"


def test_grpc_routes_by_the_model_name_header_to_the_grpc_upstreams() -> None:
    grpc = {"a": ["10.0.0.1:8001"], "b": ["10.0.0.2:8001"]}
    text = render_nginx(ROUTES, UPSTREAMS, listen="8000", grpc_listen="8001", grpc_upstreams=grpc)
    assert re.findall(r"server (\S+);", _block(text, "upstream mf-b-grpc")) == ["10.0.0.2:8001"]
    block = _block(text, "map $http_x_model_name $mf_grpc_upstream")
    assert 'default "mf-a-grpc";' in block
    assert _map_entries(text, "map $http_x_model_name $mf_grpc_upstream")["tenant-2"] == "mf-b-grpc"
    assert "listen 8001 http2;" in text
    assert "grpc_pass grpc://$mf_grpc_upstream;" in text


def test_no_grpc_server_without_grpc_listen() -> None:
    text = render_nginx(ROUTES, UPSTREAMS, listen="8000", grpc_listen=None)
    assert "grpc_pass" not in text
    assert "http2" not in text


def test_model_names_that_are_map_keywords_are_escaped() -> None:
    text = render_nginx({"default": "a", "include": "b"}, UPSTREAMS, listen="8000", grpc_listen=None)
    block = _block(text, "map $mf_model $mf_upstream")
    assert '"\\default" "mf-a";' in block
    assert '"\\include" "mf-b";' in block


def test_the_map_hash_grows_with_thousands_of_models() -> None:
    routes = {f"tenant-{i:04d}": "a" for i in range(3000)}
    text = render_nginx(routes, UPSTREAMS, listen="8000", grpc_listen=None)
    size = int(re.search(r"map_hash_max_size (\d+);", text).group(1))  # type: ignore[union-attr]
    assert size >= 2 * 3000


@pytest.mark.parametrize(
    ("routes", "upstreams", "kwargs", "message"),
    [
        ({"m": "c"}, UPSTREAMS, {}, "model 'm' is routed to group 'c'"),
        ({"../m": "a"}, UPSTREAMS, {}, "not a valid model name"),
        ({}, {}, {}, "at least one server group"),
        ({}, {"a": ["no-port"]}, {}, "'no-port' is not 'host:port'"),
        ({}, {"a": ["h:70000"]}, {}, "'h:70000' is not 'host:port'"),
        ({}, {"a": []}, {}, "needs a list"),
        ({}, {"a b": ["h:1"]}, {}, "group name 'a b'"),
        ({}, UPSTREAMS, {"listen": "0.0.0.0"}, "listen '0.0.0.0'"),
        ({}, UPSTREAMS, {"grpc_listen": "8001"}, "grpc_upstreams is not"),
        ({}, UPSTREAMS, {"grpc_listen": "8001", "grpc_upstreams": {"a": ["h:1"]}}, "each group needs both"),
        ({}, UPSTREAMS, {"default_group": "z"}, "default_group 'z'"),
        ({}, UPSTREAMS, {"keepalive": 0}, "keepalive must be at least 1"),
        ({}, UPSTREAMS, {"worker_processes": 0}, "worker_processes must be at least 1"),
    ],
)
def test_bad_tables_are_refused_naming_the_problem(
    routes: dict[str, str], upstreams: dict[str, list[str]], kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"listen": "8000", "grpc_listen": None} | kwargs
    with pytest.raises(RouterConfigError, match=re.escape(message)):
        render_nginx(routes, upstreams, **arguments)  # type: ignore[arg-type]
