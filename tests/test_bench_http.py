"""Smoke tests of the Haboob comparison's parts (benchmarks/http*.py): the baseline servers,
the load generator (and its lean HTTP client's response parser) and the targets' arithmetic.
Timings are the benchmark's business; these only check that each part works, over real
sockets and processes."""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from aseda.bench import Outcome
from benchmarks import _httpclient
from benchmarks import http as bench
from benchmarks._httpclient import BadResponse, ResponseParser
from examples.haboob import fileset

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, uses taskset")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> fileset.FileSet:
    return fileset.generate(tmp_path_factory.mktemp("docroot"), directories=1)


@pytest.mark.parametrize("kind", ["threads", "pool150", "uvicorn"])
def test_baseline_serves_files_intact_over_keep_alive(kind: str, files: fileset.FileSet) -> None:
    paths = ["/dir00000/class3_9", "/dir00000/class0_1", "/dir00000/class2_5"]
    with bench.ServerProcess(kind, files.root, cpu=None) as server:
        assert server.alive()
        with httpx.Client(base_url=server.url) as client:
            peers = set()
            for path in paths:
                response = client.get(path)
                assert response.status_code == 200
                assert response.http_version == "HTTP/1.1"
                assert hashlib.sha256(response.content).hexdigest() == files.digest(path)
                peers.add(response.extensions["network_stream"].get_extra_info("client_addr"))
            assert len(peers) == 1, "every request should reuse the one keep-alive connection"
            assert client.get("/dir00000/nothing").status_code == 404
    assert server.returncode == 0


@pytest.mark.parametrize("client", ["lean", "h11"])
def test_load_generator_prints_its_report(client: str, files: fileset.FileSet) -> None:
    with bench.ServerProcess("threads", files.root, cpu=None) as server:
        command = [
            sys.executable,
            "-m",
            "benchmarks.http_load",
            "--port",
            str(server.port),
            "--root",
            str(files.root),
            "--clients",
            "2",
            "--duration",
            "0.8",
            "--warmup",
            "0.2",
            "--client",
            client,
        ]
        report = bench.run_load(command, timeout=30)
    assert report["generator"]["client"] == client
    assert report["clients"] == 2
    assert report["ok"] > 0
    assert report["errors"] == report["refused"] == 0
    assert report["bytes"] > 0 and report["mbytes_per_s"] > 0
    assert len(report["client_ok"]) == 2 and all(n > 0 for n in report["client_ok"])
    assert 0.5 <= report["jain"] <= 1.0
    lat = report["latency"]
    assert 0 < lat["p50"] <= lat["max"]
    assert report["connections"] >= 2  # a new connection every 5 requests
    assert report["generator"]["cpu_seconds"] > 0


def test_hold_keeps_connections_open(files: fileset.FileSet, tmp_path: Path) -> None:
    cfg = bench.parse_args(["--quick", "--no-pin", "--root", str(files.root)])
    result = bench.hold(cfg, "threads", 40)
    assert "error" not in result
    assert result["open"]["ok"] == 40
    assert result["after"]["Threads"] > result["before"]["Threads"]  # a thread per connection
    assert result["held"] > 0 and result["kb_per_connection"] is not None
    assert result["done"]["second"] == {"ok": 40}
    assert result["done"]["reconnects"] == 0
    assert result["alive"]


def _point(server: str, clients: int, mbps: float, jain: float, max_s: float) -> dict[str, Any]:
    return {
        "server": server,
        "clients": clients,
        "mbytes_per_s": mbps,
        "jain": jain,
        "latency": {"max": max_s},
        "max_waiting": None,
    }


def test_targets_pass_and_miss() -> None:
    points = [
        _point("haboob-uvloop", 64, 20.0, 0.99, 0.5),
        _point("haboob-uvloop", 1024, 19.0, 0.99, 1.0),
        _point("threads", 1024, 10.0, 0.7, 30.0),
        _point("uvicorn", 1024, 17.0, 0.99, 2.0),
    ]
    [result] = bench.targets(points, 1024)
    assert [c["ok"] for c in result["checks"]] == [True, True, True]
    points[1] = _point("haboob-uvloop", 1024, 17.5, 0.97, 1.0)  # 1.03x uvicorn, Jain too low
    [result] = bench.targets(points, 1024)
    assert [c["ok"] for c in result["checks"]] == [False, False, False]  # 87.5 % of its peak
    # A request still waiting at the end counts towards threads' max response time.
    points[2]["max_waiting"] = 40.0
    assert bench.effective_max(points[2]) == 40.0


# The lean client's response parser ----------------------------------------------------------


def _feed(parser: ResponseParser, pieces: Sequence[bytes]) -> list[bool]:
    return [parser.feed(piece) for piece in pieces]


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


LENGTH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n1;name=value\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n"
)


def test_parser_reads_a_content_length_response_in_one_piece() -> None:
    parser = ResponseParser()
    assert parser.feed(LENGTH)
    assert parser.complete
    assert (parser.status, parser.body_bytes, parser.keep_alive) == (200, 11, True)


@pytest.mark.parametrize("response", [LENGTH, CHUNKED], ids=["content-length", "chunked"])
def test_parser_reads_a_response_split_into_single_bytes(response: bytes) -> None:
    parser = ResponseParser()
    done = _feed(parser, _bytewise(response))
    assert done == [False] * (len(response) - 1) + [True]
    assert parser.status == 200 and parser.keep_alive
    assert parser.body_bytes == (11 if response is LENGTH else 16)


def test_parser_counts_a_large_body_in_chunks_of_any_size() -> None:
    body = bytes(1_000_000)
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + body
    parser = ResponseParser()
    cuts = [0, 30, *range(70_000, len(response), 65536), len(response)]
    done = _feed(parser, [response[a:b] for a, b in itertools.pairwise(cuts)])
    assert done[-1] and not any(done[:-1])
    assert parser.body_bytes == 1_000_000


def test_parser_reads_a_chunked_response() -> None:
    parser = ResponseParser()
    assert _feed(parser, [CHUNKED[:60], CHUNKED[60:]]) == [False, True]
    assert (parser.status, parser.body_bytes, parser.keep_alive) == (200, 16, True)


def test_parser_reads_a_body_delimited_by_the_close() -> None:
    parser = ResponseParser()
    assert not parser.feed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome")
    assert not parser.feed(b" more")
    assert parser.feed_eof()
    assert (parser.status, parser.body_bytes, parser.keep_alive) == (200, 9, False)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_parser_says_when_the_server_closes_after_the_response(head: bytes) -> None:
    parser = ResponseParser()
    assert parser.feed(head)
    assert parser.status == 200 and not parser.keep_alive


def test_parser_skips_an_interim_response_and_reads_bodiless_statuses() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n")
    assert (parser.status, parser.body_bytes, parser.keep_alive) == (304, 0, True)
    parser.reset()  # the next response on the connection
    assert parser.feed(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
    assert (parser.status, parser.body_bytes) == (503, 4)


def test_parser_says_a_response_was_cut_short() -> None:
    parser = ResponseParser()
    assert not parser.feed(LENGTH[:-3])
    assert not parser.feed_eof()
    assert not parser.complete
    chunked = ResponseParser()
    assert not chunked.feed(CHUNKED[:-2])
    assert not chunked.feed_eof()


@pytest.mark.parametrize(
    "response",
    [
        b"garbage\r\n\r\n",
        b"<html>",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxy",
        b"HTTP/1.1 204 No Content\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nextra",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000,
    ],
)
def test_parser_refuses_what_it_cannot_read(response: bytes) -> None:
    parser = ResponseParser()
    with pytest.raises(BadResponse):
        parser.feed(response)
    # The same, a byte at a time.
    parser = ResponseParser()
    with pytest.raises(BadResponse):
        _feed(parser, [*_bytewise(response[:5000]), response[5000:]])


# The lean client end to end ------------------------------------------------------------------

#: what the test server answers for each path: the pieces it writes, and whether it then closes
ANSWERS: dict[str, tuple[list[bytes], bool]] = {
    "/ok": ([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"], False),
    "/chunked": (
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel",
            b"\r\n2\r\nlo\r\n0\r\n\r\n",
        ],
        False,
    ),
    "/until-close": ([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nby", b"e"], True),
    "/drop": ([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], True),  # no warning
    "/503": ([b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"], False),
    "/404": ([b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"], False),
    "/garbage": ([b"SPAM SPAM SPAM\r\n\r\n"], True),
}
BODY = {"/ok": 5, "/chunked": 5, "/until-close": 3, "/drop": 2, "/503": 4, "/404": 0}
OUTCOME = {
    "/ok": (Outcome.OK, ""),
    "/chunked": (Outcome.OK, ""),
    "/until-close": (Outcome.OK, ""),
    "/drop": (Outcome.OK, ""),
    "/503": (Outcome.REFUSED, "HTTP 503"),
    "/404": (Outcome.ERROR, "HTTP 404"),
    "/garbage": (Outcome.ERROR, "BadResponse"),
}
PATHS = list(ANSWERS)


async def _answer(stream: SocketStream, log: list[tuple[int, str, bool]], conn_id: int) -> None:
    """Serve one connection of the test server, logging (connection, path, asked to close)."""
    buffer = b""
    async with stream:
        while True:
            while b"\r\n\r\n" not in buffer:
                try:
                    buffer += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    return
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            close = b"\r\nconnection: close" in head.lower()
            log.append((conn_id, path, close))
            pieces, closes = ANSWERS[path]
            try:
                for piece in pieces:
                    await stream.send(piece)
            except (anyio.BrokenResourceError, OSError):
                return
            if closes or close:
                return


@pytest.mark.anyio
async def test_lean_closed_loop_counts_every_kind_of_answer(anyio_backend_name: str) -> None:
    if anyio_backend_name == "trio":
        pytest.skip("the lean client is an asyncio Protocol (it runs on uvloop); trio has none")
    log: list[tuple[int, str, bool]] = []
    ids = itertools.count()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: SocketStream) -> None:
        await _answer(stream, log, next(ids))

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        report, run, _ = await _httpclient.closed_loop(
            "127.0.0.1",
            port,
            lambda client, seq: PATHS[seq % len(PATHS)],
            clients=3,
            duration=0.5,
            think=0.002,
            per_connection=5,
            grace=30,
        )
        tg.cancel_scope.cancel()
    assert report.samples is not None
    items = report.samples.items
    assert {s.client for s in items} == {0, 1, 2}
    assert all(max(s.seq for s in items if s.client == c) >= len(PATHS) for c in range(3))
    for s in items:
        path = PATHS[s.seq % len(PATHS)]
        assert (s.outcome, s.detail) == OUTCOME[path], (path, s)
        assert s.finished >= s.intended
    # Every answer's body was counted, and no request was sent twice.
    assert run.answered == sum(1 for s in items if s.detail != "BadResponse")
    assert run.bytes_received == sum(BODY.get(PATHS[s.seq % len(PATHS)], 0) for s in items)
    assert len(log) == len(items)
    # A new connection at the latest every 5 requests, the 5th asking to close.
    per_connection: dict[int, list[bool]] = {}
    for conn_id, _, close in log:
        per_connection.setdefault(conn_id, []).append(close)
    assert run.connections == len(per_connection)
    for closes in per_connection.values():
        assert len(closes) <= 5
        assert closes == [False] * (len(closes) - 1) + [len(closes) == 5]
