"""The router's configuration in a real nginx: `nginx -t` accepts it at fleet scale, and a running nginx
sends each model's calls to its group over kept-alive connections, gRPC by the `x-model-name` header.

The groups are small servers in this process that say who they are; nginx is a subprocess on free
ports with its prefix in a temporary folder. Skipped, saying why, where nginx is not installed
(`apt-get install -y nginx`)."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from modelfleet.deploy.router import render_nginx

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install -y nginx)")
# what `modelfleet cluster` and the Kubernetes router put before the rendered blocks
HEAD = "daemon off;\npid logs/nginx.pid;\nerror_log logs/error.log warn;\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nginx_argv(prefix: Path) -> list[str]:
    assert NGINX is not None
    return [NGINX, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf")]


def write_conf(prefix: Path, text: str) -> None:
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(HEAD + text)


def test_nginx_accepts_the_router_for_thousands_of_models_with_grpc(tmp_path: Path) -> None:
    routes = {f"tenant-{i:04d}": f"g{i % 3}" for i in range(3000)} | {"default": "g0", "include": "g1"}
    http_up = {f"g{i}": [f"127.0.0.1:{9100 + i}"] for i in range(3)}
    grpc_up = {f"g{i}": [f"127.0.0.1:{9200 + i}"] for i in range(3)}
    write_conf(
        tmp_path, render_nginx(routes, http_up, listen="127.0.0.1:1", grpc_listen="1", grpc_upstreams=grpc_up)
    )
    done = subprocess.run(
        [*nginx_argv(tmp_path), "-t"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


class _Group(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the upstream connections expect

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer()

    def _answer(self) -> None:
        server = self.server
        assert isinstance(server, GroupServer)
        with server.lock:
            server.paths.append(self.path)
            server.peers.add(self.client_address)
        body = json.dumps({"group": server.name, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class GroupServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _Group)
        self.name = name
        self.lock = threading.Lock()
        self.paths: list[str] = []
        self.peers: set[tuple[str, int]] = set()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def _grpc_group(name: str) -> tuple[object, int]:
    import grpc

    def infer(request: bytes, context: grpc.ServicerContext) -> bytes:
        model = dict(context.invocation_metadata()).get("x-model-name", "")
        return f"{name}:{model}".encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


class Front:
    def __init__(self, prefix: Path, text: str, port: int) -> None:
        write_conf(prefix, text)
        self.prefix = prefix
        self.port = port
        self.log = prefix / "logs" / "stderr.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(nginx_argv(prefix), stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # poll the listener nginx opens
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log.read_text(errors='replace')}")
            try:
                if self.get("/v2/health/live")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("nginx did not start listening")

    def get(
        self, path: str, method: str = "GET", connection: http.client.HTTPConnection | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=b"{}" if method == "POST" else None)
            answer = conn.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        finally:
            if connection is None:
                conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Front, dict[str, GroupServer]]]:
    import grpc

    groups = {name: GroupServer(name) for name in ("g-a", "g-b")}
    grpc_groups = {name: _grpc_group(name) for name in groups}
    front_port, grpc_port = free_port(), free_port()
    text = render_nginx(
        {"tenant-1": "g-a", "tenant-2": "g-b", "ranker": "g-b"},
        {name: [g.address] for name, g in groups.items()},
        listen=f"127.0.0.1:{front_port}",
        grpc_listen=f"127.0.0.1:{grpc_port}",
        grpc_upstreams={name: [f"127.0.0.1:{port}"] for name, (_, port) in grpc_groups.items()},
        default_group="g-a",
        keepalive=4,
    )
    front = Front(tmp_path, text, front_port)
    front.grpc_port = grpc_port  # type: ignore[attr-defined]
    try:
        yield front, groups
    finally:
        front.stop()
        for group in groups.values():
            group.close()
        for server, _ in grpc_groups.values():
            assert isinstance(server, grpc.Server)
            server.stop(None)


def test_each_model_reaches_its_group(fleet: tuple[Front, dict[str, GroupServer]]) -> None:
    front, groups = fleet
    for path, group in [
        ("/v2/models/tenant-1/infer", "g-a"),
        ("/v2/models/tenant-2/versions/3/infer", "g-b"),
        ("/v2/models/ranker", "g-b"),
        ("/v2/models/ranker/ready", "g-b"),
    ]:
        status, headers, body = front.get(path, "POST" if path.endswith("infer") else "GET")
        assert status == 200, body
        assert json.loads(body) == {"group": group, "path": path}
        assert headers["X-Modelfleet-Group"] == f"mf-{group}"
    assert groups["g-a"].paths == ["/v2/models/tenant-1/infer"]


def test_calls_without_a_model_go_to_the_default_group_and_health_is_nginx_own(
    fleet: tuple[Front, dict[str, GroupServer]],
) -> None:
    front, groups = fleet
    status, _, body = front.get("/v2/repository/index", "POST")
    assert (status, json.loads(body)["group"]) == (200, "g-a")
    assert front.get("/v2/health/ready")[0] == 200
    assert "/v2/health/ready" not in groups["g-a"].paths + groups["g-b"].paths


def test_a_model_no_group_holds_is_a_json_404(fleet: tuple[Front, dict[str, GroupServer]]) -> None:
    front, groups = fleet
    status, headers, body = front.get("/v2/models/tenant-9/infer", "POST")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": "model 'tenant-9' is not served by this fleet"}
    assert groups["g-a"].paths == groups["g-b"].paths == []


def test_upstream_connections_are_kept_alive(fleet: tuple[Front, dict[str, GroupServer]]) -> None:
    front, groups = fleet
    for _ in range(40):  # sequential calls, each on a new client connection to nginx
        assert front.get("/v2/models/tenant-1/infer", "POST")[0] == 200
    # one nginx worker per CPU may each open its own; without keepalive this would be 40
    assert len(groups["g-a"].peers) <= 8


def test_grpc_calls_route_by_the_model_name_header(fleet: tuple[Front, dict[str, GroupServer]]) -> None:
    import grpc

    front, _ = fleet
    with grpc.insecure_channel(f"127.0.0.1:{front.grpc_port}") as channel:  # type: ignore[attr-defined]
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        assert infer(b"", metadata=[("x-model-name", "ranker")], timeout=10) == b"g-b:ranker"
        assert infer(b"", metadata=[("x-model-name", "tenant-1")], timeout=10) == b"g-a:tenant-1"
        assert infer(b"", timeout=10) == b"g-a:"  # no header: the default group
