"""A trivial V2 inference target: the cheapest server `modelfleet bench` can be pointed at.

Raw ASGI under uvicorn (httptools + uvloop): every POST gets one fixed small V2 JSON answer, and
`GET /v2/models/{name}` describes an FP32 [-1, 16] model, so the client's own cost can be measured.

    python benchmarks/trivial_target.py --port 8000
    uvicorn trivial_target:app --app-dir bench --port 8000 --no-access-log
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

INFER_RESPONSE = json.dumps(
    {
        "model_name": "trivial",
        "model_version": "1",
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}],
    },
    separators=(",", ":"),
).encode()

NOT_FOUND = b'{"error":"not found"}'
JSON_TYPE = (b"content-type", b"application/json")


def metadata(name: str) -> bytes:
    return json.dumps(
        {
            "name": name,
            "versions": ["1"],
            "platform": "trivial",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 1]}],
        },
        separators=(",", ":"),
    ).encode()


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [JSON_TYPE, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    parts = scope["path"].strip("/").split("/")
    if scope["method"] == "POST":
        more = True
        while more:  # read the whole request body before answering, as a real server must
            message = await receive()
            more = message.get("more_body", False)
        if parts[:2] == ["v2", "models"] and parts[-1] == "infer":
            await _answer(send, 200, INFER_RESPONSE)
        else:
            await _answer(send, 404, NOT_FOUND)
        return
    if parts[:2] == ["v2", "models"] and len(parts) == 3:
        await _answer(send, 200, metadata(parts[2]))
    elif parts[:2] == ["v2", "health"] or (parts[:2] == ["v2", "models"] and parts[-1] == "ready"):
        await _answer(send, 200, b"")
    else:
        await _answer(send, 404, NOT_FOUND)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
