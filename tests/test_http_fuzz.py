"""aseda.http never crashes, hangs or leaks on garbage: hypothesis bytes over real sockets."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aseda
from aseda import http

TOKENS = [
    b"GET",
    b"HEAD",
    b"POST",
    b"OPTIONS",
    b" ",
    b"/",
    b"/a%2Fb",
    b"%00",
    b"%ff",
    b"%",
    b"*",
    b"?q=1",
    b"http://x/",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/9.9",
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"Host: a",
    b"Content-Length: 5",
    b"Content-Length: -1",
    b"Content-Length: 99999999999999999999999999",
    b"Transfer-Encoding: chunked",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"zz\r\n",
    b"Expect: 100-continue",
    b"Connection: close",
    b"Accept: application/json",
    b":",
    b"\x00",
    b"\xff",
    b"\t",
]
VALID = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"

GARBAGE = st.one_of(
    st.binary(max_size=600),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6)), max_size=60).map(b"".join),
    st.lists(st.sampled_from(TOKENS), max_size=60).map(lambda parts: VALID + b"".join(parts)),
)


@aseda.stage(capacity=64, workers=4)
async def echo(request: http.Request) -> http.Response:
    if request.path == "/fail":
        raise ValueError("fail")
    return http.Response.text(f"{request.method} {request.path} {len(request.body)}")


@asynccontextmanager
async def _serve() -> AsyncIterator[http.HttpServer]:
    limits = http.Limits(
        max_target=256, max_header_bytes=2048, max_body=4096, header_timeout=2, idle_timeout=2
    )
    async with aseda.Graph(echo).run() as running, http.serve(running, limits=limits) as server:
        yield server


BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("trio", {}), id="trio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
]


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest) -> Iterator[tuple[BlockingPortal, http.HttpServer]]:
    """One server per backend, on an event loop in its own thread, for every example."""
    backend, options = request.param
    with start_blocking_portal(backend, options) as portal:
        with portal.wrap_async_context_manager(_serve()) as server:
            yield portal, server
        # serve() returned: every connection task is gone
        assert server.statistics().connections_open == 0


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data``, end the sending side and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        received = b""
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server may close on bad input while we still send
    return received


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=GARBAGE)
def test_garbage_never_breaks_the_server(
    served: tuple[BlockingPortal, http.HttpServer], data: bytes
) -> None:
    """Any bytes get nothing or well-formed HTTP answers, then a close; the server serves on."""
    _, server = served
    with structlog.testing.capture_logs() as logs:
        answer = exchange(server.port, data)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 "), answer[:100]
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/1.1 "):
            assert int(line.split()[1]) in {100, 200, 400, 404, 408, 413, 414, 431, 500, 503}
    # The socket layer logs only when a connection task fails unexpectedly.
    assert [e for e in logs if e["event"].startswith("http: connection")] == []
    assert exchange(server.port, b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")[
        :12
    ] == (b"HTTP/1.1 200")


def test_fuzzed_server_is_consistent(served: tuple[BlockingPortal, http.HttpServer]) -> None:
    """After the examples, the counters add up: every response counted, no stray connection."""
    _, server = served
    exchange(server.port, b"GET /fail HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    stats: Any = server.statistics()
    assert sum(stats.responses.values()) >= stats.requests
    assert stats.responses.get(500, 0) >= 1
