"""Prometheus export: the text a registry exposes, parsed back, matches the graph's stats."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

import anyio
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import aseda
from aseda._prometheus import (
    COUNTERS,
    GAUGES,
    PrometheusCollector,
    SnapshotReader,
    register_prometheus,
)

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> tuple[Samples, dict[str, str]]:
    """Every sample of the registry's text exposition, and every family's type."""
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}
    return samples, {f.name: f.type for f in families}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


@asynccontextmanager
async def loaded_graph() -> AsyncIterator[aseda.RunningGraph]:
    """A two-stage graph with a failure, a refusal, full queues and a waiting sender."""
    gate = anyio.Event()

    @aseda.stage(capacity=2)
    async def parse(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    @aseda.stage(capacity=2, workers=(1, 3))
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


def check_against(samples: Samples, stats: aseda.GraphStats) -> None:
    """Every stage's figures in the scrape are those of the snapshot."""
    for s in stats:
        for field, _ in COUNTERS:
            assert value(samples, f"aseda_{field}_total", stage=s.name) == getattr(s, field)
        for reason, count in s.refusals.items():
            assert value(samples, "aseda_refusals_total", stage=s.name, reason=reason) == count
        for suffix, field, _ in GAUGES:
            if field != "throughput":  # a rate: it may move between two snapshots
                assert value(samples, f"aseda_{suffix}", stage=s.name) == getattr(s, field)
        assert value(samples, "aseda_throughput_per_second", stage=s.name) >= 0
        for kind in ("queue_wait", "service", "response"):
            latency = getattr(s, kind)
            name = f"aseda_{kind}_seconds"
            assert value(samples, f"{name}_count", stage=s.name) == latency.count
            for q, attr in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
                got = value(samples, name, stage=s.name, quantile=q)
                assert same(got, getattr(latency, attr)), (s.name, kind, q)
            total = latency.count * latency.mean if latency.count else 0.0
            assert value(samples, f"{name}_sum", stage=s.name) == pytest.approx(total)
            assert value(samples, f"aseda_{kind}_max_seconds", stage=s.name) == latency.max
    assert value(samples, "aseda_abandoned") == stats.abandoned
    assert value(samples, "aseda_state", state=stats.state) == 1


async def test_scrape_matches_stats() -> None:
    """Counters, gauges and latency summaries parse back to the running graph's snapshot."""
    registry = CollectorRegistry()
    async with loaded_graph() as running:
        collector = register_prometheus(running, registry)
        stats = running.stats()
        samples, types = scrape(registry)
        check_against(samples, stats)
        assert (stats["parse"].failed, stats["parse"].rejected) == (1, 1)
        assert value(samples, "aseda_refusals_total", stage="parse", reason="queue full") == 1
        assert value(samples, "aseda_queue_length", stage="held") == 2
        assert value(samples, "aseda_senders_waiting", stage="held") == 1
        assert value(samples, "aseda_workers_max", stage="held") == 3
        assert value(samples, "aseda_state", state="running") == 1
        assert value(samples, "aseda_state", state="stopped") == 0
        assert types["aseda_admitted"] == "counter"
        assert types["aseda_queue_length"] == "gauge"
        assert types["aseda_response_seconds"] == "summary"
        collector.unregister()
        collector.unregister()  # a second time does nothing
        assert scrape(registry)[0] == {}


async def test_stopped_graph_reports_its_final_snapshot() -> None:
    """After the run the collector reports the stopped graph until it is unregistered."""
    registry = CollectorRegistry()

    @aseda.stage
    async def double(x: int) -> int:
        return 2 * x

    async with aseda.Graph(double).run() as running:
        register_prometheus(running, registry, prefix="svc")
        assert await running.call(21) == 42
    samples, _ = scrape(registry)
    assert value(samples, "svc_processed_total", stage="double") == 1
    assert value(samples, "svc_state", state="stopped") == 1
    assert value(samples, "svc_response_seconds_count", stage="double") >= 0


async def test_empty_latency_is_nan() -> None:
    """A stage with no latency samples exports NaN quantiles and a zero count and sum."""
    registry = CollectorRegistry()

    @aseda.stage
    async def idle(x: int) -> int:
        return x

    async with aseda.Graph(idle).run() as running:
        register_prometheus(running, registry)
        samples, _ = scrape(registry)
    assert math.isnan(value(samples, "aseda_service_seconds", stage="idle", quantile="0.99"))
    assert value(samples, "aseda_service_seconds_count", stage="idle") == 0
    assert value(samples, "aseda_service_seconds_sum", stage="idle") == 0


async def test_default_registry_and_clashes() -> None:
    """Without a registry it joins prometheus_client's default; a second graph needs a prefix."""

    @aseda.stage
    async def echo(x: int) -> int:
        return x

    async with aseda.Graph(echo).run() as running:
        collector = register_prometheus(running)
        try:
            assert collector.registry is REGISTRY
            assert REGISTRY.get_sample_value("aseda_admitted_total", {"stage": "echo"}) == 0
            with pytest.raises(ValueError, match="Duplicated"):
                register_prometheus(running)
            other = register_prometheus(running, prefix="other")
            assert REGISTRY.get_sample_value("other_workers", {"stage": "echo"}) == 1
            other.unregister()
        finally:
            collector.unregister()
        assert REGISTRY.get_sample_value("aseda_admitted_total", {"stage": "echo"}) is None


async def test_scrape_from_another_thread_reads_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scrape from a foreign thread (an HTTP server's) takes the snapshot on the loop."""
    registry = CollectorRegistry()
    loop_thread = threading.get_ident()
    readers: list[int] = []
    async with loaded_graph() as running:
        original: Callable[[], aseda.GraphStats] = running.stats

        def stats() -> aseda.GraphStats:
            readers.append(threading.get_ident())
            return original()

        monkeypatch.setattr(running, "stats", stats)
        register_prometheus(running, registry)
        samples, _ = await anyio.to_thread.run_sync(scrape, registry)
        assert readers == [loop_thread]
        check_against(samples, original())


async def test_blocked_loop_falls_back_to_direct_reads() -> None:
    """A reader whose loop does not answer in time reads directly, and keeps doing so a while."""
    async with loaded_graph() as running:
        reader = SnapshotReader(running, timeout=0.05)
        expected = running.stats()["parse"].admitted
        results: list[aseda.GraphStats] = []
        worker = threading.Thread(target=lambda: results.extend([reader.read(), reader.read()]))
        worker.start()
        worker.join()  # blocks the event loop: the reader's hand-over cannot run
        assert [r["parse"].admitted for r in results] == [expected, expected]


def test_bad_prefix() -> None:
    """A prefix that is not a metric name is refused."""
    with pytest.raises(ValueError, match="not a valid Prometheus"):
        PrometheusCollector(cast(aseda.RunningGraph, None), prefix="my-app")


def test_missing_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus_client the error says which extra to install."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'aseda\[prometheus\]'"):
        PrometheusCollector(cast(aseda.RunningGraph, None))
