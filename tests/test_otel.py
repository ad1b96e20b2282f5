"""OpenTelemetry export: observable instruments read by the SDK match the graph's stats."""

from __future__ import annotations

import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData, NumberDataPoint

import aseda
from aseda._otel import instrument_otel
from aseda._prometheus import COUNTERS

pytestmark = pytest.mark.anyio

Points = dict[tuple[str, frozenset[tuple[str, Any]]], float]


@pytest.fixture
def sdk() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def points(data: MetricsData | None) -> Points:
    """Every data point, keyed by instrument name and attributes."""
    out: Points = {}
    if data is None:
        return out
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    key = (metric.name, frozenset((point.attributes or {}).items()))
                    out[key] = point.value
    return out


def units(data: MetricsData | None) -> dict[str, str]:
    assert data is not None
    return {
        m.name: m.unit or ""
        for r in data.resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
    }


def at(found: Points, name: str, **attributes: Any) -> float:
    return found[(name, frozenset(attributes.items()))]


@asynccontextmanager
async def loaded_graph() -> AsyncIterator[aseda.RunningGraph]:
    """A two-stage graph with a failure, a refusal, full queues and answered calls."""
    gate = anyio.Event()

    @aseda.stage(capacity=2)
    async def parse(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    @aseda.stage(capacity=2)
    async def held(x: int) -> int:
        if x >= 10:
            await gate.wait()
        return x

    async with aseda.Graph(parse >> held).run() as running:
        assert [await running.call(x) for x in range(3)] == [0, 1, 2]
        await running.send(-1)
        for x in range(10, 16):
            await running.send(x)
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(aseda.Rejected):
            running.send_nowait(16)
        yield running
        gate.set()


async def test_instruments_match_stats(sdk: tuple[MeterProvider, InMemoryMetricReader]) -> None:
    """Counters, gauges and latency quantiles carry the stage attribute and the stats' values."""
    provider, reader = sdk
    async with loaded_graph() as running:
        handle = instrument_otel(running, provider.get_meter("test"))
        stats = running.stats()
        data = reader.get_metrics_data()
        found = points(data)
        for s in stats:
            for field, _ in COUNTERS:
                assert at(found, f"aseda.{field}", stage=s.name) == getattr(s, field)
            for reason, count in s.refusals.items():
                assert at(found, "aseda.refusals", stage=s.name, reason=reason) == count
            assert at(found, "aseda.queue.length", stage=s.name) == s.queue_length
            assert at(found, "aseda.queue.capacity", stage=s.name) == s.capacity
            assert at(found, "aseda.workers", stage=s.name) == s.workers
            assert at(found, "aseda.in_flight", stage=s.name) == s.in_flight
            assert at(found, "aseda.senders_waiting", stage=s.name) == s.senders_waiting
            assert at(found, "aseda.throughput", stage=s.name) >= 0
            for kind in ("queue_wait", "service", "response"):
                latency = getattr(s, kind)
                for q, attr in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
                    key = (f"aseda.{kind}", frozenset({"stage": s.name, "quantile": q}.items()))
                    if latency.count:
                        assert found[key] == getattr(latency, attr)
                    else:
                        assert key not in found
        assert at(found, "aseda.abandoned") == 0
        assert any(name == "aseda.response" for name, _ in found)  # calls are timed
        assert at(found, "aseda.refusals", stage="parse", reason="queue full") == 1
        assert at(found, "aseda.failed", stage="parse") == 1
        assert at(found, "aseda.senders_waiting", stage="held") == 1
        assert units(data)["aseda.response"] == "s"
        assert units(data)["aseda.admitted"] == "{event}"
        handle.close()
        assert handle.closed
        assert points(reader.get_metrics_data()) == {}


async def test_close_stops_every_callback(sdk: tuple[MeterProvider, InMemoryMetricReader]) -> None:
    """After close() (or the with block) every instrument's callback observes nothing."""
    provider, _ = sdk

    @aseda.stage(capacity=aseda.UNBOUNDED)
    async def echo(x: int) -> int:
        return x

    async with aseda.Graph(echo).run() as running:
        with instrument_otel(running, provider.get_meter("test"), prefix="svc") as handle:
            assert len(handle.instruments) == 19
            assert {i.name for i in handle.instruments} >= {"svc.admitted", "svc.response"}
            observed = handle._per_stage("capacity")(cast(Any, None))
            assert list(observed) == []  # an unbounded queue's capacity is not reported
        for callback in (
            handle._per_stage("admitted"),
            handle._latency("service"),
            handle._refusals,
            handle._abandoned,
        ):
            assert list(cast(Callable[[Any], Any], callback)(None)) == []


async def test_collection_from_another_thread_reads_on_the_loop(
    sdk: tuple[MeterProvider, InMemoryMetricReader], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader collecting on its own thread has each snapshot taken on the event loop."""
    provider, reader = sdk
    loop_thread = threading.get_ident()
    readers: set[int] = set()
    async with loaded_graph() as running:
        original: Callable[[], aseda.GraphStats] = running.stats

        def stats() -> aseda.GraphStats:
            readers.add(threading.get_ident())
            return original()

        monkeypatch.setattr(running, "stats", stats)
        instrument_otel(running, provider.get_meter("test"))
        found = points(await anyio.to_thread.run_sync(reader.get_metrics_data))
        assert readers == {loop_thread}
        assert at(found, "aseda.admitted", stage="parse") == original()["parse"].admitted


async def test_global_meter_by_default() -> None:
    """Without a meter it uses the global provider's meter named "aseda" (a no-op here)."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with aseda.Graph(echo).run() as running:
        handle = instrument_otel(running)
        assert len(handle.instruments) == 19
        handle.close()


def test_missing_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without opentelemetry-api the error says which extra to install."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'aseda\[otel\]'"):
        instrument_otel(cast(aseda.RunningGraph, None))
