"""Latency statistics, tracing and instruments in a running graph."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

import aseda

pytestmark = pytest.mark.anyio


async def ident(x: Any) -> Any:
    return x


def chain(*names: str, **options: Any) -> aseda.Graph:
    stages = [aseda.stage(name=n, **options)(ident) for n in names]
    flow: Any = stages[0]
    for s in stages[1:]:
        flow = flow >> s
    return aseda.Graph(flow)


async def test_calls_and_sampled_sends_are_timed() -> None:
    """Every call() and the sampled sends feed each stage's wait/service/response summaries."""
    async with chain("a", "b").run() as running:
        for i in range(20):
            assert await running.call(i) == i
        await running.send("sampled")  # the first send is always sampled
        stats = running.stats()
    a, b = stats["a"], stats["b"]
    assert a.service.count == b.service.count >= 20
    for s in (a, b):
        assert 0 <= s.queue_wait.p50 <= s.queue_wait.max
        assert 0 < s.service.p90 <= s.service.max
        assert s.response.p50 > 0 and not math.isnan(s.response.p99)
    # time since entry grows along the path
    assert b.response.p50 >= a.response.p50
    assert a.throughput > 0
    assert a.recent_response.count == a.response.count  # all within the last second or two
    assert stats.elapsed > 0 and stats.time > 0


async def test_statistics_off_measures_nothing() -> None:
    """graph.run(statistics=False) keeps no latency samples."""
    async with chain("a").run(statistics=False) as running:
        for i in range(5):
            await running.call(i)
            await running.send(i)
    s = running.stats()["a"]
    assert s.processed == 10 and s.service.count == 0 and math.isnan(s.service.p50)


async def test_blocking_and_batch_stages_are_timed() -> None:
    """Thread and batch stages time the envelopes in their chunks too."""

    @aseda.stage
    def thread(x: int) -> int:
        return x

    @aseda.stage(batch=8)
    async def batch(xs: list[int]) -> list[int]:
        return xs

    async with aseda.Graph(thread >> batch).run() as running:
        for i in range(10):
            await running.call(i)
    stats = running.stats()
    assert stats["thread"].service.count == stats["batch"].service.count == 10


async def test_trace_logs_one_event_per_traced_event_with_its_spans() -> None:
    """trace=1.0 traces everything: one structlog 'trace' event per event, a span per stage."""
    with capture_logs() as logs:
        async with chain("a", "b", "c").run(trace=1.0) as running:
            await running.call("x")
            await running.send("y")
    traces = [e for e in logs if e["event"] == "trace"]
    assert len(traces) == 2
    for trace in traces:
        assert trace["outcome"] == "ok"
        assert [span[0] for span in trace["spans"]] == ["a", "b", "c"]
        for _, enqueued, started, ended, outcome in trace["spans"]:
            assert 0 <= enqueued <= started <= ended and outcome == "ok"
    assert traces[0]["trace_id"] != traces[1]["trace_id"]


async def test_trace_of_a_failed_event() -> None:
    """A traced event that fails ends its trace with outcome 'failed'."""

    @aseda.stage
    async def boom(x: int) -> int:
        raise ValueError(x)

    with capture_logs() as logs:
        async with aseda.Graph(aseda.stage(name="a")(ident) >> boom).run(trace=1.0) as running:
            with pytest.raises(ValueError, match="1"):
                await running.call(1)
    (trace,) = [e for e in logs if e["event"] == "trace"]
    assert trace["outcome"] == "failed"
    assert [(s[0], s[4]) for s in trace["spans"]] == [("a", "ok"), ("boom", "failed")]


class Recorder(aseda.Instrument):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def graph_started(self, graph: aseda.Graph) -> None:
        self.calls.append(("started", graph.entry))

    def graph_stopped(self, stats: aseda.GraphStats) -> None:
        self.calls.append(("stopped", stats.state))

    def span(self, span: aseda.Span) -> None:
        self.calls.append(("span", span.stage))

    def refused(self, stage: str, reason: str) -> None:
        self.calls.append(("refused", reason))

    def failed(self, stage: str, error: BaseException) -> None:
        self.calls.append(("failed", type(error).__name__))


async def test_instrument_hooks() -> None:
    """Each overridden hook is called at its moment."""
    recorder = Recorder()
    gate = anyio.Event()

    @aseda.stage(capacity=1)
    async def held(x: int) -> int:
        await gate.wait()
        if x == 2:
            raise KeyError(x)
        return x

    async with aseda.Graph(held).run(trace=1.0, instruments=[recorder]) as running:
        running.send_nowait(1)
        await anyio.wait_all_tasks_blocked()
        running.send_nowait(2)
        with pytest.raises(aseda.Rejected):
            running.send_nowait(3)
        gate.set()
    assert recorder.calls == [
        ("started", "held"),
        ("refused", "queue full"),
        ("span", "held"),
        ("span", "held"),
        ("failed", "KeyError"),
        ("stopped", "stopped"),
    ]


async def test_a_failing_instrument_is_removed_and_logged() -> None:
    """An instrument that raises is dropped; the graph and other instruments go on."""

    class Broken(aseda.Instrument):
        def span(self, span: aseda.Span) -> None:
            raise RuntimeError("broken instrument")

    recorder = Recorder()
    with capture_logs() as logs:
        async with chain("a").run(trace=1.0, instruments=[Broken(), recorder]) as running:
            assert await running.call(1) == 1
            assert await running.call(2) == 2
    assert [c for c in recorder.calls if c[0] == "span"] == [("span", "a"), ("span", "a")]
    assert [e["event"] for e in logs].count("instrument failed and was removed") == 1


async def test_bad_options() -> None:
    """Bad sampling, tracing or instrument options are ConfigErrors."""
    graph = chain("a")
    for options in ({"sample_rate": 0}, {"trace": 1.5}, {"instruments": [object()]}):
        with pytest.raises(aseda.ConfigError):
            async with graph.run(**options):
                pass


def test_stats_to_dict_is_json_ready() -> None:
    """A snapshot turns into plain JSON (nan becomes None)."""
    import json

    async def main() -> dict[str, Any]:
        async with chain("a").run() as running:
            return running.stats().to_dict()

    data = anyio.run(main)
    text = json.dumps(data, allow_nan=False)
    assert '"name": "a"' in text and data["stages"][0]["service"]["p50"] is None


async def test_snapshot_names_the_bottleneck() -> None:
    """A stage whose workers are all busy and whose queue fills is named, with a reason."""
    gate = anyio.Event()

    @aseda.stage(capacity=10)
    async def slow(x: int) -> int:
        await gate.wait()
        return x

    async with aseda.Graph(aseda.stage(name="fast")(ident) >> slow).run() as running:
        assert running.stats().bottleneck is None
        for i in range(8):
            running.send_nowait(i)
        await anyio.wait_all_tasks_blocked()
        stats = running.stats()
        assert stats.bottleneck is not None and stats.bottleneck.stage == "slow"
        assert "busy" in stats.bottleneck.reason
        assert stats.to_dict()["bottleneck"]["stage"] == "slow"
        gate.set()
