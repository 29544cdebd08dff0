import pytest

from modelfleet.bench.httpwire import HTTPProtocolError, ResponseParser, model_path, request_head
from modelfleet.bench.spec import Target

Answer = tuple[int, bool, bytes | None]


def parser(keep_body: bool = True) -> tuple[ResponseParser, list[Answer]]:
    answers: list[Answer] = []
    return ResponseParser(lambda s, k, b: answers.append((s, k, b)), keep_body=keep_body), answers


def feed_bytewise(p: ResponseParser, data: bytes) -> None:
    for i in range(len(data)):
        p.feed(data[i : i + 1])


OK = b'HTTP/1.1 200 OK\r\nserver: x\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"a": [1]}\n'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n"
)


def test_request_head() -> None:
    head = request_head("POST", "/v2/models/m/infer", "h:1", 12, [("Content-Type", "application/json")])
    assert head == (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: h:1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 12\r\n\r\n"
    )
    assert request_head("GET", "/", "h") == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_model_path_quotes_and_prefixes() -> None:
    target = Target.parse("http://h:8000/api/")
    assert model_path(target, "a b", "/infer") == "/api/v2/models/a%20b/infer"


def test_content_length_in_one_read() -> None:
    p, answers = parser()
    p.feed(OK)
    assert answers == [(200, True, b'{"a": [1]}\n')]
    assert not p.in_progress


def test_two_responses_in_one_read_and_split_across_reads() -> None:
    p, answers = parser()
    data = OK + OK.replace(b"200 OK", b"503 Service Unavailable")
    p.feed(data[:50])
    assert p.in_progress and not answers
    p.feed(data[50:150])
    p.feed(data[150:])
    assert [a[0] for a in answers] == [200, 503]


@pytest.mark.parametrize("data", [OK, CHUNKED])
def test_byte_by_byte(data: bytes) -> None:
    p, answers = parser()
    feed_bytewise(p, data * 2)
    assert len(answers) == 2
    assert answers[0] == answers[1]
    assert not p.in_progress


def test_chunked_body_with_extensions_and_trailers() -> None:
    p, answers = parser()
    p.feed(CHUNKED)
    assert answers == [(200, True, b"hello world")]


def test_bodies_are_not_kept_unless_asked() -> None:
    p, answers = parser(keep_body=False)
    p.feed(OK + CHUNKED)
    assert answers == [(200, True, None), (200, True, None)]


def test_headers_are_case_insensitive() -> None:
    p, answers = parser()
    p.feed(b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 2\r\nConnection: Close\r\n\r\nok")
    assert answers == [(200, False, b"ok")]


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0", True),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0", False),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 0", False),
        (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0", True),
    ],
)
def test_keep_alive(head: bytes, keep_alive: bool) -> None:
    p, answers = parser()
    p.feed(head + b"\r\n\r\n")
    assert answers == [(200, keep_alive, b"")]


def test_body_until_close() -> None:
    p, answers = parser()
    p.feed(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
    p.feed(b"part two")
    assert not answers
    p.feed_eof()
    assert answers == [(200, False, b"part one, part two")]


def test_close_in_the_middle_of_a_response() -> None:
    p, _ = parser()
    p.feed(OK[:-3])
    with pytest.raises(HTTPProtocolError, match="closed in the middle"):
        p.feed_eof()


def test_close_between_responses_is_fine() -> None:
    p, answers = parser()
    p.feed(OK)
    p.feed_eof()
    assert len(answers) == 1


def test_informational_responses_are_skipped_and_204_has_no_body() -> None:
    p, answers = parser()
    p.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n" + OK)
    assert [a[0] for a in answers] == [204, 200]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"HTTX/1.1 200 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n", "malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n",
            "longer than its declared size",
        ),
    ],
)
def test_malformed_responses(data: bytes, message: str) -> None:
    p, _ = parser()
    with pytest.raises(HTTPProtocolError, match=message):
        p.feed(data)


def test_endless_head_is_refused() -> None:
    p, _ = parser()
    with pytest.raises(HTTPProtocolError, match="head longer"):
        p.feed(b"HTTP/1.1 200 OK\r\n" + b"x" * 70_000)
