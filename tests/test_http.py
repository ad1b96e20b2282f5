"""aseda.http over real sockets: httpx and raw TCP clients against a served graph."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import httpx
import pytest
import structlog

import aseda
from aseda import http

pytestmark = pytest.mark.anyio

BIG = bytes(range(256)) * 32768  # 8 MiB: more than any socket buffer holds


@aseda.stage(capacity=64, workers=4)
async def app(request: http.Request) -> Any:
    """One stage answering by path, each path exercising one outcome."""
    path = request.path
    if path == "/missing":
        return aseda.DROP
    if path == "/forbidden":
        raise http.HttpError(403, "not yours", headers=[("x-why", "test")])
    if path == "/boom":
        raise ValueError("boom")
    if path == "/wrong":
        return "not a response"
    if path == "/inject":
        return http.Response(200, b"x", headers=[("x-bad", "a\r\nset-cookie: evil=1")])
    if path == "/bad-name":
        return http.Response(200, b"x", headers=[("x bad", "v")])
    if path == "/bye":
        return http.Response(200, b"bye", headers=[("Connection", "close")])
    if path == "/big":
        return http.Response(200, BIG, content_type="application/octet-stream")
    if path == "/echo":
        return http.Response.json(
            {
                "method": request.method,
                "target": request.target,
                "path": request.path,
                "query": request.query,
                "body": request.body.decode(),
                "version": request.http_version,
                "keep_alive": request.keep_alive,
                "client": list(request.client) if request.client else None,
                "x-test": request.header("X-Test"),
            }
        )
    return http.Response.text(f"hello {path}")


@asynccontextmanager
async def served(
    *stages: aseda.Stage, limits: http.Limits | None = None, **options: Any
) -> AsyncIterator[http.HttpServer]:
    graph = aseda.Graph(*stages) if stages else aseda.Graph(app)
    async with graph.run() as running, http.serve(running, limits=limits, **options) as server:
        yield server


def client() -> httpx.AsyncClient:
    # verify=False: plain HTTP only, and it spares loading a CA bundle per client.
    return httpx.AsyncClient(trust_env=False, timeout=10, verify=False)


async def raw(server: http.HttpServer, data: bytes, *, eof: bool = True) -> bytes:
    """Send bytes on a plain TCP connection and read everything until the server closes."""
    received = b""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            await stream.send(data)
            if eof:
                await stream.send_eof()
            try:
                while True:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    return received


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of HTTP/1.1 responses (each with a Content-Length)."""
    found = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        found.append((int(status_line.split()[1]), headers, data[:length]))
        data = data[length:]
    return found


# The basics ------------------------------------------------------------------------------


async def test_get_and_head() -> None:
    """GET answers the handler's body; HEAD the same headers, Content-Length included."""
    async with served() as server, client() as c:
        assert server.url == f"http://127.0.0.1:{server.port}"
        get = await c.get(f"{server.url}/hi")
        head = await c.head(f"{server.url}/hi")
    assert get.status_code == 200
    assert get.text == "hello /hi"
    assert get.headers["content-type"] == "text/plain; charset=utf-8"
    assert get.headers["server"] == "aseda"
    assert get.headers["date"].endswith(" GMT")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == "9"
    assert head.headers["content-type"] == get.headers["content-type"]


async def test_request_fields() -> None:
    """The Request event: raw target, decoded path, raw query, headers, body, client."""
    async with served() as server, client() as c:
        response = await c.post(
            f"{server.url}/ech%6F?a=%20b&c", content=b"payload", headers={"X-Test": "yes"}
        )
    assert response.status_code == 200
    data = response.json()
    assert data["method"] == "POST"
    assert data["target"] == "/ech%6F?a=%20b&c"
    assert data["path"] == "/echo"
    assert data["query"] == "a=%20b&c"
    assert data["body"] == "payload"
    assert data["version"] == "1.1"
    assert data["keep_alive"] is True
    assert data["client"][0] == "127.0.0.1"
    assert data["x-test"] == "yes"


async def test_keep_alive_reuses_one_connection() -> None:
    """Five requests from one keep-alive client use one connection."""
    async with served() as server, client() as c:
        for i in range(5):
            assert (await c.get(f"{server.url}/{i}")).text == f"hello /{i}"
        stats = server.statistics()
    assert stats.connections_total == 1
    assert stats.connections_open == 1
    assert stats.requests == 5
    assert stats.responses == {200: 5}
    assert stats.by_class() == {"2xx": 5}
    assert stats.bytes_sent > 5 * len(b"hello /0") and stats.bytes_received > 0


async def test_http10_and_connection_close() -> None:
    """HTTP/1.0 and `Connection: close` get one response and the server closes."""
    async with served() as server:
        old = await raw(server, b"GET /echo HTTP/1.0\r\n\r\n", eof=False)
        close = await raw(
            server, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", eof=False
        )
    [(status, headers, body)] = responses(old)
    assert status == 200
    assert json.loads(body)["version"] == "1.0"
    assert json.loads(body)["keep_alive"] is False
    assert headers["connection"] == "close"
    [(status, headers, body)] = responses(close)
    assert (status, headers["connection"], body) == (200, "close", b"hello /x")


async def test_pipelined_requests_answered_in_order() -> None:
    """Requests sent back to back in one write are answered in order on one connection."""
    requests = b"".join(f"GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode() for i in range(5))
    async with served() as server:
        data = await raw(server, requests + b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
        assert server.statistics().connections_total == 1
    answers = responses(data.replace(b"hello /h", b""))  # HEAD's length, no body
    assert [body for _, _, body in answers[:5]] == [f"hello /{i}".encode() for i in range(5)]
    assert answers[5][1]["content-length"] == "8"
    assert data.endswith(b"\r\n\r\n")  # the HEAD answer carried no body


async def test_expect_100_continue() -> None:
    """A client that waits for 100 Continue gets it, then its answer."""
    async with served() as server, await anyio.connect_tcp("127.0.0.1", server.port) as stream:
        await stream.send(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += await stream.receive()
        assert interim.startswith(b"HTTP/1.1 100 ")
        await stream.send(b"data")
        answer = b""
        while not answer.endswith(b"}"):
            answer += await stream.receive()
    [(status, _, body)] = responses(answer)
    assert status == 200 and json.loads(body)["body"] == "data"


async def test_large_body_intact_on_close() -> None:
    """A large response reaches a client in full even when the connection closes after it."""
    async with served() as server, client() as c:
        response = await c.get(f"{server.url}/big", headers={"Connection": "close"})
    assert response.status_code == 200
    assert response.content == BIG


# The graph's answers -----------------------------------------------------------------------


async def test_dropped_is_404_and_http_error_its_status() -> None:
    """aseda.Dropped answers 404; HttpError its status, message and headers."""
    async with served() as server, client() as c:
        missing = await c.get(f"{server.url}/missing")
        forbidden = await c.get(f"{server.url}/forbidden", headers={"Accept": "application/json"})
        stats = server.statistics()
    assert missing.status_code == 404
    assert "<h1>404 Not Found</h1>" in missing.text
    assert forbidden.status_code == 403
    assert forbidden.headers["x-why"] == "test"
    assert forbidden.json() == {"status": 403, "error": "Forbidden", "message": "not yours"}
    assert stats.responses == {404: 1, 403: 1}
    assert stats.connections_total == 1  # neither closed the connection


async def test_handler_error_and_non_response_are_500_logged() -> None:
    """A handler's exception and a value that is not a Response answer 500, logged."""
    async with served() as server, client() as c:
        with structlog.testing.capture_logs() as logs:
            boom = await c.get(f"{server.url}/boom")
            server._log.last = -float("inf")  # the rate limit would hold the second line
            wrong = await c.get(f"{server.url}/wrong")
        stats = server.statistics()
    assert boom.status_code == wrong.status_code == 500
    assert "ValueError" not in boom.text  # the client learns nothing of the inside
    ours = [e for e in logs if e["event"].startswith("http:")]
    assert [e["event"] for e in ours] == [
        "http: handler failed; answered 500",
        "http: the graph's answer is not an aseda.http.Response; answered 500",
    ]
    assert ours[0]["error"] == "ValueError('boom')" and ours[0]["target"] == "/boom"
    assert stats.errors == 2


async def test_header_injection_is_500() -> None:
    """A response header with CR/LF is never sent: the client gets a 500 page instead."""
    async with served() as server, client() as c:
        response = await c.get(f"{server.url}/inject")
        after = await c.get(f"{server.url}/fine")  # the connection is still usable
    assert response.status_code == 500
    assert "set-cookie" not in response.headers and "x-bad" not in response.headers
    assert after.text == "hello /fine"
    assert server.statistics().errors == 1


@pytest.mark.parametrize("path", ["/bad-name", "/inject"])
async def test_invalid_response_headers_are_500_raw(path: str) -> None:
    """An invalid header name or value never reaches the wire, byte for byte."""
    async with served() as server:
        answer = await raw(server, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert b"x bad" not in answer and b"evil" not in answer


async def test_a_response_may_close_the_connection() -> None:
    """A response's own ``Connection: close`` closes the connection after it, once."""
    async with served() as server:
        answer = await raw(
            server, b"GET /bye HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n"
        )
    assert answer.count(b"HTTP/1.1 ") == 1 and answer.endswith(b"bye")
    assert answer.lower().count(b"connection: close") == 1


async def test_500_log_is_rate_limited() -> None:
    """Many failing requests in a row log one line."""
    async with served() as server, client() as c:
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                assert (await c.get(f"{server.url}/boom")).status_code == 500
    assert len([e for e in logs if e["event"].startswith("http:")]) == 1


@asynccontextmanager
async def blocked_stage() -> AsyncIterator[tuple[http.HttpServer, anyio.Event, httpx.AsyncClient]]:
    """A stage whose one worker blocks on a gate, with a threshold of one queued request.

    Yields once the worker is busy and the queue holds one request, so the next is shed.
    """
    gate = anyio.Event()
    entered = anyio.Event()

    @aseda.stage(workers=1, admission=aseda.Threshold(1))
    async def slow(request: http.Request) -> http.Response:
        entered.set()
        await gate.wait()
        return http.Response.text("done")

    async with (
        served(slow, retry_after=2.5) as server,
        client() as c,
        anyio.create_task_group() as tg,
    ):
        answers: list[int] = []

        async def get() -> None:
            async with client() as own:
                answers.append((await own.get(f"{server.url}/slow")).status_code)

        tg.start_soon(get)
        await entered.wait()
        tg.start_soon(get)
        await anyio.wait_all_tasks_blocked()
        yield server, gate, c
        gate.set()
    assert answers == [200, 200]


async def test_shedding_answers_503_with_retry_after() -> None:
    """A refused request gets 503, Retry-After and an HTML page by default."""
    async with blocked_stage() as (server, _, c):
        response = await c.get(f"{server.url}/slow")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"  # 2.5 s, rounded up
        assert response.headers["content-type"] == "text/html; charset=utf-8"
        assert "busy" in response.text and "<h1>503 Service Unavailable</h1>" in response.text
        stats = server.statistics()
    assert stats.refused == 1
    assert server.statistics().responses == {503: 1, 200: 2}


@pytest.mark.parametrize(
    ("accept", "as_json"),
    [
        ("application/json", True),
        ("application/json, text/html;q=0.5", True),
        ("application/problem+json", True),
        ("application/*", True),
        ("text/html,application/json;q=0.9", False),
        ("application/json;q=0.5, */*", False),
        ("*/*", False),
        ("application/json;q=0", False),
        ("application/json;q=bad", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_preference(accept: str | None, as_json: bool) -> None:
    """JSON pages only for a client that ranks JSON above HTML."""
    from aseda.http._pages import prefers_json

    assert prefers_json(accept) is as_json


async def test_503_body_follows_accept() -> None:
    """The 503 page is JSON when the client's Accept prefers it, HTML otherwise."""
    async with blocked_stage() as (server, _, c):
        as_json = await c.get(f"{server.url}/slow", headers={"Accept": "application/json"})
        as_html = await c.get(f"{server.url}/slow", headers={"Accept": "text/html,*/*"})
    assert as_json.status_code == as_html.status_code == 503
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json() == {
        "status": 503,
        "error": "Service Unavailable",
        "message": "The server is busy right now. Please try again in a moment.",
    }
    assert as_html.headers["content-type"] == "text/html; charset=utf-8"
    assert "<h1>503 Service Unavailable</h1>" in as_html.text


async def test_graph_closed_is_503_and_close() -> None:
    """A request reaching a graph that no longer admits events gets 503 and the close."""
    graph = aseda.Graph(app)
    async with graph.run() as running:
        pass
    async with http.serve(running) as server, client() as c:
        response = await c.get(f"{server.url}/x")
    assert response.status_code == 503
    assert response.headers["connection"] == "close"
    assert server.statistics().refused == 1


# Bad input ---------------------------------------------------------------------------------


async def test_garbage_is_400_then_close() -> None:
    """A malformed request gets 400 and the connection closes."""
    async with served() as server:
        data = await raw(server, b"\x16\x03\x01 not http at all\r\n\r\n", eof=False)
        stats = server.statistics()
    [(status, headers, _)] = responses(data)
    assert status == 400 and headers["connection"] == "close"
    assert stats.bad_requests == 1 and stats.requests == 0


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /a%00b HTTP/1.1", 400),  # NUL once decoded
        (b"GET /%ff%fe HTTP/1.1", 400),  # not UTF-8 once decoded
        (b"GET http://example.com/ HTTP/1.1", 400),  # absolute-form
        (b"GET * HTTP/1.1", 400),  # asterisk-form is for OPTIONS only
        (b"GET a/b HTTP/1.1", 400),
        (b"OPTIONS * HTTP/1.1", 200),
        (b"GET /a%2Fb HTTP/1.1", 200),  # decodes to /a/b; the raw target keeps %2F
        (b"GET /caf%C3%A9 HTTP/1.1", 200),
    ],
)
async def test_request_targets(request_line: bytes, status: int) -> None:
    """Targets that are not origin-form, or decode to NUL or bad UTF-8, are 400."""
    async with served() as server:
        data = await raw(server, request_line + b"\r\nHost: a\r\nConnection: close\r\n\r\n")
    [(answer, _, body)] = responses(data)
    assert answer == status
    if request_line.startswith(b"GET /a%2F"):
        assert body == b"hello /a/b"
    if b"caf" in request_line:
        assert body == "hello /café".encode()


async def test_target_too_long_is_414() -> None:
    """A request target over max_target gets 414, whole or still arriving."""
    limits = http.Limits(max_target=100, max_header_bytes=1000)
    async with served(limits=limits) as server:
        whole = await raw(server, b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        partial = await raw(server, b"GET /" + b"a" * 500, eof=False)  # no end of line yet
        fits = await raw(server, b"GET /" + b"a" * 99 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        stats = server.statistics()
    assert responses(whole)[0][0] == 414
    assert responses(partial)[0][0] == 414
    assert responses(fits)[0][0] == 200
    assert stats.bad_requests == 2


async def test_huge_headers_are_431() -> None:
    """A request head over max_header_bytes gets 431 and the connection closes."""
    async with served(limits=http.Limits(max_target=100, max_header_bytes=1000)) as server:
        async with client() as c:
            response = await c.get(f"{server.url}/", headers={"X-Big": "x" * 2000})
        stats = server.statistics()
    assert response.status_code == 431
    assert response.headers["connection"] == "close"
    assert stats.bad_requests == 1


async def test_body_too_large_is_413() -> None:
    """A body over max_body gets 413: by Content-Length, or as a chunked body grows."""
    limits = http.Limits(max_body=1000)
    async with served(limits=limits) as server, client() as c:
        fits = await c.post(f"{server.url}/echo", content=b"x" * 1000)
        declared = await c.post(f"{server.url}/echo", content=b"x" * 100_000)

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 200

        chunked = await c.post(f"{server.url}/echo", content=chunks())
        stats = server.statistics()
    assert fits.status_code == 200 and len(fits.json()["body"]) == 1000
    assert declared.status_code == 413 and declared.headers["connection"] == "close"
    assert chunked.status_code == 413
    assert stats.bad_requests == 2 and stats.requests == 1


# Slow clients ------------------------------------------------------------------------------


async def test_slow_client_times_out_without_holding_a_worker() -> None:
    """Half a request gets 408 after header_timeout; the one worker serves others meanwhile."""

    @aseda.stage(workers=1)
    async def one(request: http.Request) -> http.Response:
        return http.Response.text("served")

    limits = http.Limits(header_timeout=0.2)
    async with served(one, limits=limits) as server, client() as c:
        async with await anyio.connect_tcp("127.0.0.1", server.port) as slow:
            await slow.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")  # and nothing more
            assert (await c.get(f"{server.url}/")).text == "served"  # the worker is free
            received = b""
            with anyio.fail_after(10):
                try:
                    while True:
                        received += await slow.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
        stats = server.statistics()
    [(status, headers, _)] = responses(received)
    assert status == 408 and headers["connection"] == "close"
    assert stats.timeouts == 1 and stats.requests == 1


async def test_trickling_client_times_out() -> None:
    """The header timeout runs from the first byte: trickling bytes does not reset it."""
    limits = http.Limits(header_timeout=0.2)
    request = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 10_000
    async with served(limits=limits) as server:
        async with await anyio.connect_tcp("127.0.0.1", server.port) as stream:
            received = b""
            with anyio.fail_after(10):
                for byte in request:  # one byte, then 20 ms listening for the server's answer
                    await stream.send(bytes([byte]))
                    with anyio.move_on_after(0.02):
                        with suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                            received = await stream.receive()
                        break
        stats = server.statistics()
    assert received.startswith(b"HTTP/1.1 408 ")
    assert stats.timeouts == 1 and stats.requests == 0


async def test_idle_keep_alive_connection_closes_quietly() -> None:
    """A keep-alive connection with no next request is closed after idle_timeout, silently."""
    async with served(limits=http.Limits(idle_timeout=0.2)) as server:
        data = await raw(server, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", eof=False)
        stats = server.statistics()
    [(status, _, body)] = responses(data)  # the answer, and nothing after it
    assert (status, body) == (200, b"hello /x")
    assert stats.idle_closed == 1 and stats.timeouts == 0


async def test_client_that_never_reads_is_dropped() -> None:
    """A client that reads too slowly is reset after write_timeout, its data thrown away."""
    limits = http.Limits(write_timeout=0.2)
    async with served(limits=limits) as server:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
            sock.connect(("127.0.0.1", server.port))
            sock.setblocking(False)
            sock.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
            received = 0
            with anyio.fail_after(10):
                try:
                    while True:  # 4 KiB per 10 ms: far too slow for 8 MiB in 0.2 s
                        await anyio.wait_readable(sock)
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        received += len(chunk)
                        with anyio.move_on_after(0.01):  # the slow reader itself
                            await anyio.Event().wait()
                except ConnectionResetError:
                    pass
        stats = server.statistics()
    assert received < len(BIG)
    assert stats.write_timeouts == 1 and stats.connections_open == 0


async def test_max_connections_refused_with_503() -> None:
    """Over max_connections, a new connection gets 503 at once and is closed."""
    async with (
        served(limits=http.Limits(max_connections=2)) as server,
        await anyio.connect_tcp("127.0.0.1", server.port) as first,
        await anyio.connect_tcp("127.0.0.1", server.port) as second,
    ):
        for stream in (first, second):  # both surely accepted and counted
            await stream.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            answer = b""
            while not answer.endswith(b"hello /"):
                answer += await stream.receive()
        async with client() as c:
            third = await c.get(f"{server.url}/")
        stats = server.statistics()
    assert third.status_code == 503
    assert third.headers["connection"] == "close" and third.headers["retry-after"] == "1"
    assert stats.connections_refused == 1 and stats.connections_open == 2
    assert stats.responses == {200: 2, 503: 1}


# Shutdown ----------------------------------------------------------------------------------


async def test_shutdown_finishes_requests_in_flight_and_closes_idle_ones() -> None:
    """Leaving serve() lets a request in flight finish and closes idle keep-alive ones."""
    gate = anyio.Event()
    entered = anyio.Event()

    @aseda.stage
    async def held(request: http.Request) -> http.Response:
        if request.path == "/held":
            entered.set()
            await gate.wait()
        return http.Response.text("finished")

    answers: list[httpx.Response] = []
    async with aseda.Graph(held).run() as running, anyio.create_task_group() as tg:
        async with http.serve(running) as server:
            idle = await anyio.connect_tcp("127.0.0.1", server.port)
            await idle.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            answer = b""
            while not answer.endswith(b"finished"):
                answer += await idle.receive()

            async def get() -> None:
                async with client() as c:
                    answers.append(await c.get(f"{server.url}/held"))

            async def release() -> None:
                await anyio.wait_all_tasks_blocked()  # serve() is shutting down by now
                gate.set()

            tg.start_soon(get)
            await entered.wait()
            tg.start_soon(release)
        # serve() has returned: its tasks are gone, idle connections closed
        with anyio.fail_after(10), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await idle.receive()
        await idle.aclose()
        stats = server.statistics()
    [response] = answers
    assert response.status_code == 200 and response.text == "finished"
    assert response.headers["connection"] == "close"
    assert stats.connections_open == 0 and stats.idle_closed == 1


async def test_no_task_left_behind() -> None:
    """After serve() returns, the tasks it started are gone, half-sent requests included."""
    limits = http.Limits(shutdown_timeout=0.1)  # then the half-sent request is cancelled
    async with aseda.Graph(app).run() as running:
        before = {task.id for task in anyio.get_running_tasks()}
        async with http.serve(running, limits=limits) as server, client() as c:
            await c.get(f"{server.url}/")
            half = await anyio.connect_tcp("127.0.0.1", server.port)
            await half.send(b"GET / HTTP/1.1\r\n")  # never finished: cancelled at the end
            await anyio.wait_all_tasks_blocked()
            assert len(anyio.get_running_tasks()) > len(before)
        after = {task.id for task in anyio.get_running_tasks()}
        await half.aclose()
    assert after <= before


# Configuration -----------------------------------------------------------------------------


def test_limits_are_checked() -> None:
    """Limits refuse values that make no sense."""
    with pytest.raises(aseda.ConfigError, match="max_body"):
        http.Limits(max_body=0)
    with pytest.raises(aseda.ConfigError, match="header_timeout"):
        http.Limits(header_timeout=-1)
    with pytest.raises(aseda.ConfigError, match="max_target"):
        http.Limits(max_target=20000)
    assert http.Limits(idle_timeout=float("inf")).idle_timeout == float("inf")


def test_messages() -> None:
    """Response and Request constructors check their input; HttpError is an AsedaError."""
    with pytest.raises(aseda.ConfigError):
        http.Response(99)
    with pytest.raises(aseda.ConfigError):
        http.Response(200, "text")  # type: ignore[arg-type]
    with pytest.raises(aseda.ConfigError):
        http.Response(200, headers=[("Content-Length", "3")])
    with pytest.raises(aseda.ConfigError):
        http.HttpError(200)
    with pytest.raises(aseda.ConfigError):
        http.Request("GET", "/%00")
    assert issubclass(http.HttpError, aseda.AsedaError)
    request = http.Request("GET", "/a%20b?q=1", headers=[("X-A", "1"), ("x-a", "2")])
    assert (request.path, request.query, request.header("x-A")) == ("/a b", "q=1", "1, 2")
    assert request.header("missing", "d") == "d"
    assert http.Response.json({"a": 1}).body == b'{"a":1}'
    assert http.Response.html("<p>").content_type == "text/html; charset=utf-8"


async def test_serve_checks_its_arguments() -> None:
    """A `to=` naming no stage, a bad on_refuse or retry_after: ConfigError at once."""
    async with aseda.Graph(app).run() as running:
        with pytest.raises(aseda.ConfigError, match="no stage"):
            async with http.serve(running, to="nope"):
                pass
        with pytest.raises(aseda.ConfigError):
            async with http.serve(running, on_refuse="drop"):  # type: ignore[arg-type]
                pass
        with pytest.raises(aseda.ConfigError):
            async with http.serve(running, retry_after=-1):
                pass


def test_public_api() -> None:
    """aseda.http's names are documented and report the package."""
    for name in http.__all__:
        obj = getattr(http, name)
        assert obj.__doc__, name
        assert obj.__module__ == "aseda.http", name


def test_docs_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    """The python blocks of docs/http.md run and print the output shown after them."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "http.md").read_text()
    pairs = re.findall(r"```python\n(.*?)```\n\nOutput:\n\n```text\n(.*?)```", text, re.S)
    assert pairs
    for code, expected in pairs:
        exec(compile(code, "docs/http.md", "exec"), {"__name__": "__docs__"})
        assert capsys.readouterr().out == expected


async def test_a_backlog_of_connections_is_all_served() -> None:
    """Connections waiting in the kernel's backlog at once (a burst) are all accepted and served."""
    roomy = aseda.stage(name="roomy", capacity=1024)(app.handler)
    async with served(roomy) as server:
        # Blocking connects complete in the kernel's backlog before the loop runs again, so
        # the server finds them all pending at its next accept().
        socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
        try:
            for i, sock in enumerate(socks):
                sock.sendall(f"GET /n{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answers: list[bytes] = []
            for sock in socks:
                sock.setblocking(False)
                stream = await anyio.abc.SocketStream.from_socket(sock)
                received = b""
                with anyio.fail_after(10):
                    with suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                        while True:
                            received += await stream.receive()
                answers.append(received)
                await stream.aclose()
        finally:
            for sock in socks:
                sock.close()
        statistics = server.statistics()
    assert [a.startswith(b"HTTP/1.1 200") for a in answers] == [True] * 100
    assert all(answer.endswith(f"hello /n{i}".encode()) for i, answer in enumerate(answers))
    assert statistics.connections_total == 100
