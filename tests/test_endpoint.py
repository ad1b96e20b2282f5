"""The stats endpoint over real sockets: JSON, Prometheus text, errors, slow clients."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import aseda
from aseda._endpoint import StatsEndpoint, serve_stats

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def loaded_graph() -> AsyncIterator[aseda.RunningGraph]:
    """A two-stage graph with a failure, a refusal, full queues and a waiting sender."""
    gate = anyio.Event()

    @aseda.stage(capacity=2)
    async def parse(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    @aseda.stage(capacity=2)
    async def held(x: int) -> int:
        await gate.wait()
        return x

    async with aseda.Graph(parse >> held).run() as running:
        for x in range(-1, 6):
            await running.send(x)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(aseda.Rejected):
            running.send_nowait(6)
        yield running
        gate.set()


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=10)


async def raw(endpoint: StatsEndpoint, data: bytes, *, eof: bool = True) -> bytes:
    """Send bytes on a plain TCP connection (then end it, if ``eof``) and read everything
    until the server closes."""
    received = b""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream:
            if data:
                await stream.send(data)
            if eof:
                await stream.send_eof()
            try:
                while True:
                    received += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    return received


def without_rates(stats: dict[str, Any]) -> dict[str, Any]:
    """A snapshot dict without the figures that move between two snapshots of a still graph."""
    return {
        **{k: v for k, v in stats.items() if k not in ("time", "elapsed", "stages")},
        "stages": [{k: v for k, v in s.items() if k != "throughput"} for s in stats["stages"]],
    }


async def test_stats_json_matches_stats() -> None:
    """GET /stats answers the snapshot's dict, the graph's shape and its bottleneck."""
    async with loaded_graph() as running, serve_stats(running) as endpoint:
        assert endpoint.url == f"http://127.0.0.1:{endpoint.port}/stats"
        async with client() as http:
            response = await http.get(endpoint.url)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["connection"] == "close"
        data = response.json()
        expected = running.stats().to_dict()
        assert without_rates({k: data[k] for k in expected}) == without_rates(expected)
        assert data["stages"][0]["refusals"] == {"queue full": 1}
        assert data["graph"] == {
            "entry": "parse",
            "stages": ["parse", "held"],
            "edges": [{"source": "parse", "target": "held", "kind": "next", "back": False}],
        }
        assert data["bottleneck"]["stage"] == "held"
        assert "queue 2/2" in data["bottleneck"]["reason"]


async def test_json_is_strict() -> None:
    """Unbounded capacities and empty latencies are valid JSON: "inf" and null."""

    @aseda.stage(capacity=aseda.UNBOUNDED)
    async def idle(x: int) -> int:
        return x

    async with (
        aseda.Graph(idle).run() as running,
        serve_stats(running) as endpoint,
        client() as http,
    ):
        text = (await http.get(endpoint.url)).text

    def refuse(token: str) -> Any:
        raise AssertionError(f"not strict JSON: {token}")

    stage = json.loads(text, parse_constant=refuse)["stages"][0]
    assert stage["capacity"] == "inf"
    assert stage["service"]["p99"] is None


async def test_metrics_parse_back() -> None:
    """GET /metrics answers Prometheus text that parses back to the snapshot's figures."""
    async with loaded_graph() as running, serve_stats(running) as endpoint:
        async with client() as http:
            response = await http.get(endpoint.metrics_url)
        stats = running.stats()
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    for s in stats:
        assert samples[("aseda_admitted_total", (("stage", s.name),))] == s.admitted
        assert samples[("aseda_queue_length", (("stage", s.name),))] == s.queue_length
    key = ("aseda_refusals_total", (("reason", "queue full"), ("stage", "parse")))
    assert samples[key] == 1


async def test_metrics_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus_client, /metrics is 404 and says what to install."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with (
        aseda.Graph(echo).run() as running,
        serve_stats(running) as endpoint,
        client() as http,
    ):
        response = await http.get(endpoint.metrics_url)
        assert (await http.get(endpoint.url)).status_code == 200
    assert response.status_code == 404
    assert "pip install 'aseda[prometheus]'" in response.text


async def test_index_404_405_and_head() -> None:
    """/ is an index, unknown paths 404, other methods 405, HEAD has headers only."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with (
        aseda.Graph(echo).run() as running,
        serve_stats(running) as endpoint,
        client() as http,
    ):
        index = await http.get(endpoint.base_url + "/")
        missing = await http.get(endpoint.base_url + "/nope?x=1")
        posted = await http.post(endpoint.url, content=b"{}")
        head = await http.head(endpoint.url)
        query = await http.get(endpoint.url + "?pretty=1")
    assert index.status_code == 200 and "/stats" in index.text and endpoint.url in index.text
    assert missing.status_code == 404 and "/nope" in missing.text
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert query.status_code == 200 and query.json()["stages"][0]["name"] == "echo"


async def test_garbage_and_oversized_requests() -> None:
    """Garbage gets 400 and an oversized request head 431; both connections are closed."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with aseda.Graph(echo).run() as running:
        async with serve_stats(running, max_request_size=1024) as endpoint:
            garbage = await raw(endpoint, b"\x16\x03\x01 not http at all\r\n\r\n")
            huge = await raw(endpoint, b"GET /stats HTTP/1.1\r\nX-Pad: " + b"a" * 4096)
            empty = await raw(endpoint, b"")
            async with client() as http:
                assert (await http.get(endpoint.url)).status_code == 200
        assert await running.call(7) == 7  # the graph never noticed
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert huge.startswith(b"HTTP/1.1 431 ")
    assert empty == b""


async def test_slow_client_does_not_block_others() -> None:
    """A client stalled mid-request does not hold up another; both are answered."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with aseda.Graph(echo).run() as running, serve_stats(running) as endpoint:
        with anyio.fail_after(10):
            async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as slow:
                await slow.send(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                # Connected first, so accepted first: a server serving one connection at a
                # time would leave this request waiting until the test gave up.
                async with client() as http:
                    assert (await http.get(endpoint.url)).status_code == 200
                await slow.send(b"\r\n")
                answer = b""
                try:
                    while True:
                        answer += await slow.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b'"stages"' in answer


async def test_slow_client_times_out() -> None:
    """A client that does not finish its request in time gets 408 and is disconnected."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with (
        aseda.Graph(echo).run() as running,
        serve_stats(running, connection_timeout=0.2) as endpoint,
    ):
        answer = await raw(endpoint, b"GET /stats HTTP/1.1\r\n", eof=False)
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_too_many_connections() -> None:
    """Past max_connections a client is answered 503 at once."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with (
        aseda.Graph(echo).run() as running,
        serve_stats(running, max_connections=1) as endpoint,
    ):
        with anyio.fail_after(10):
            async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as slow:
                await slow.send(b"GET /stats HTTP/1.1\r\n")
                async with client() as http:
                    response = await http.get(endpoint.url)
    assert response.status_code == 503


async def test_failing_snapshot_is_500_and_the_graph_runs_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error while answering is a 500 for that client, never an error in the graph."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    def broken() -> aseda.GraphStats:
        raise RuntimeError("boom")

    async with aseda.Graph(echo).run() as running:
        async with serve_stats(running) as endpoint:
            monkeypatch.setattr(running, "stats", broken)
            async with client() as http:
                response = await http.get(endpoint.url)
            monkeypatch.undo()
            async with client() as http:
                assert (await http.get(endpoint.url)).status_code == 200
        assert await running.call(1) == 1
    assert response.status_code == 500
    assert "boom" in response.text


async def test_without_h11(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without h11 the endpoint says what to install, and the graph is not disturbed."""
    monkeypatch.setitem(sys.modules, "h11", None)

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with aseda.Graph(echo).run() as running:
        with pytest.raises(ImportError, match=r"aseda\[serve\]"):
            async with serve_stats(running):
                pass  # pragma: no cover
        assert await running.call(3) == 3


async def test_block_errors_leave_as_themselves() -> None:
    """An error in the block leaves serve_stats as itself, not inside an exception group."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with aseda.Graph(echo).run() as running:
        with pytest.raises(KeyError):
            async with serve_stats(running):
                raise KeyError("mine")


async def test_listener_closed_after_the_block() -> None:
    """Leaving the block closes the listener: new connections are refused."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with aseda.Graph(echo).run() as running:
        async with serve_stats(running) as endpoint:
            port = endpoint.port
        with pytest.raises(OSError, match="connection attempts failed"):
            await anyio.connect_tcp("127.0.0.1", port)
