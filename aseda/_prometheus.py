"""Prometheus export: a prometheus_client collector over a running graph's statistics.

prometheus_client is an optional dependency (``pip install aseda[prometheus]``): this module
imports it only when a collector is made, so ``import aseda`` never needs it.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from ._stats import GraphStats, StageStats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from ._runtime import RunningGraph

__all__ = [
    "COUNTERS",
    "GAUGES",
    "LATENCIES",
    "QUANTILES",
    "PrometheusCollector",
    "SnapshotReader",
    "register_prometheus",
]

#: StageStats counters exported as Prometheus counters: (field, help text).
COUNTERS: tuple[tuple[str, str], ...] = (
    ("admitted", "Events put into the stage's queue."),
    ("rejected", "Events refused and reported to their sender."),
    ("processed", "Events whose handler returned."),
    ("failed", "Events whose handler raised."),
    ("shed", "Events shed: refused from upstream, or dropped from the queue."),
    ("dropped", "Shed events dropped from the queue after they were admitted."),
    ("degraded", "Refused events answered by the stage's Degrade handler."),
    ("redirected", "Refused events sent to another stage by Redirect."),
)

#: StageStats fields exported as gauges: (metric suffix, field, help text).
GAUGES: tuple[tuple[str, str, str], ...] = (
    ("queue_length", "queue_length", "Events waiting in the stage's queue."),
    ("queue_capacity", "capacity", "The most events the stage's queue holds (+Inf: unbounded)."),
    ("workers", "workers", "Live workers of the stage."),
    ("workers_min", "workers_min", "The least workers the stage's pool may have."),
    ("workers_max", "workers_max", "The most workers the stage's pool may have."),
    ("in_flight", "in_flight", "Events taken from the queue and not yet finished."),
    ("senders_waiting", "senders_waiting", "Tasks waiting for room in the stage's queue."),
    ("throughput_per_second", "throughput", "Events processed per second, lately."),
)

#: StageStats latency summaries, each exported as a Prometheus summary in seconds.
LATENCIES: tuple[tuple[str, str], ...] = (
    ("queue_wait", "Time sampled events waited in the stage's queue."),
    ("service", "Time the stage's handler took per sampled event."),
    ("response", "Time from entering the graph to leaving the stage, per sampled event."),
)

#: The quantiles exported for each latency: (label value, LatencySummary field).
QUANTILES: tuple[tuple[str, str], ...] = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))

#: The states a graph reports, each a sample of the ``state`` gauge.
STATES = ("starting", "running", "draining", "stopped", "cancelled")

#: seconds a SnapshotReader reads directly after the event loop did not answer in time
STALL = 10.0

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_MISSING = "aseda's Prometheus export needs prometheus_client: pip install 'aseda[prometheus]'"


def _require() -> Any:
    """Import prometheus_client's metric families, or explain how to install it."""
    try:
        import prometheus_client
        from prometheus_client import core
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    del prometheus_client
    return core


class SnapshotReader:
    """Takes :meth:`aseda.RunningGraph.stats` snapshots on the event loop's thread, from any.

    ``stats()`` belongs to the event loop's thread: it folds pending latency samples into the
    stage histograms, which workers feed on that thread. A scraper's or an exporter's thread
    (prometheus_client's HTTP server, OpenTelemetry's periodic reader) therefore hands the
    call to the loop and waits for it, up to ``timeout`` seconds. It reads directly instead
    on the loop's own thread, once the graph has stopped, and when the loop does not answer
    in time (for the next :data:`STALL` seconds, so a loop blocked on this very thread, say
    shutting down the exporter, costs one wait and not one per instrument).

    Made on the event loop's thread (inside the ``async with graph.run()`` block).
    """

    def __init__(self, running: RunningGraph, timeout: float = 1.0) -> None:
        self.running = running
        self.timeout = timeout
        self._stalled_until = -math.inf
        self._thread = threading.get_ident()
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        try:
            native = anyio.lowlevel.current_token().native_token
        except Exception:  # no event loop in this thread: read directly
            return
        for method in ("call_soon_threadsafe", "run_sync_soon"):  # asyncio's loop, trio's token
            schedule = getattr(native, method, None)
            if callable(schedule):
                self._schedule = schedule
                break

    def read(self) -> GraphStats:
        """One snapshot of the whole graph."""
        running, schedule = self.running, self._schedule
        if (
            schedule is None
            or threading.get_ident() == self._thread
            or running.state in ("stopped", "cancelled")
            or time.monotonic() < self._stalled_until
        ):
            return _read_directly(running)
        done = threading.Event()
        box: list[GraphStats | BaseException] = []

        def job() -> None:
            try:
                box.append(running.stats())
            except BaseException as exc:
                box.append(exc)
            finally:
                done.set()

        try:
            schedule(job)
        except RuntimeError:  # the loop has closed
            return _read_directly(running)
        if not done.wait(self.timeout):
            self._stalled_until = time.monotonic() + STALL
            return _read_directly(running)
        result = box[0]
        if isinstance(result, BaseException):
            raise result
        return result


def _read_directly(running: RunningGraph) -> GraphStats:
    # Off the loop's thread a stage's refusal dict may change size while it is copied.
    for _ in range(10):
        try:
            return running.stats()
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return running.stats()


class PrometheusCollector:
    """A prometheus_client collector reporting every stage of a running graph.

    Each scrape takes one :meth:`aseda.RunningGraph.stats` snapshot and yields, for every
    stage (label ``stage``): the counters ``<prefix>_admitted_total``, ``_rejected_total``,
    ``_processed_total``, ``_failed_total``, ``_shed_total``, ``_dropped_total``,
    ``_degraded_total``, ``_redirected_total`` and ``_refusals_total`` (labels ``stage`` and
    ``reason``); the gauges ``_queue_length``, ``_queue_capacity``, ``_workers``,
    ``_workers_min``, ``_workers_max``, ``_in_flight``, ``_senders_waiting`` and
    ``_throughput_per_second``; and the summaries ``_queue_wait_seconds``,
    ``_service_seconds`` and ``_response_seconds`` (quantiles 0.5, 0.9 and 0.99, with
    ``_count`` and ``_sum`` of the sampled events). The graph itself reports
    ``_abandoned`` and ``_state`` (label ``state``: 1 for the current state, 0 otherwise).

    A stopped graph keeps reporting its final snapshot until the collector is unregistered.
    A scrape from another thread (prometheus_client's HTTP server) has its snapshot taken on
    the event loop's thread (see :class:`SnapshotReader`): make the collector there, inside
    the ``async with graph.run()`` block.

    Args:
        running: the running graph to report.
        prefix: the start of every metric name.

    Raises:
        ImportError: prometheus_client is not installed (``pip install aseda[prometheus]``).
        ValueError: ``prefix`` is not a valid Prometheus metric name.
    """

    def __init__(self, running: RunningGraph, prefix: str = "aseda") -> None:
        self._core = _require()
        if not _NAME.match(prefix):
            raise ValueError(f"{prefix!r} is not a valid Prometheus metric name prefix")
        self.running = running
        self.prefix = prefix
        self._reader = SnapshotReader(running)
        self.registry: CollectorRegistry | None = None

    def describe(self) -> Iterator[Metric]:
        """Yield every metric family without samples (registration needs no snapshot)."""
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family with one snapshot's samples."""
        yield from self._families(self._reader.read())

    def unregister(self) -> None:
        """Remove this collector from the registry it was registered with (if any)."""
        registry, self.registry = self.registry, None
        if registry is not None:
            registry.unregister(self)

    def _families(self, stats: GraphStats | None) -> Iterator[Metric]:
        core, p = self._core, self.prefix
        stages: tuple[StageStats, ...] = stats.stages if stats is not None else ()
        for field, doc in COUNTERS:
            counter = core.CounterMetricFamily(f"{p}_{field}", doc, labels=["stage"])
            for s in stages:
                counter.add_metric([s.name], getattr(s, field))
            yield counter
        refusals = core.CounterMetricFamily(
            f"{p}_refusals",
            "Refusals of events by the stage, by reason.",
            labels=["stage", "reason"],
        )
        for s in stages:
            for reason, count in sorted(s.refusals.items()):
                refusals.add_metric([s.name, reason], count)
        yield refusals
        for suffix, field, doc in GAUGES:
            gauge = core.GaugeMetricFamily(f"{p}_{suffix}", doc, labels=["stage"])
            for s in stages:
                gauge.add_metric([s.name], float(getattr(s, field)))
            yield gauge
        for kind, doc in LATENCIES:
            summary = core.SummaryMetricFamily(f"{p}_{kind}_seconds", doc, labels=["stage"])
            for s in stages:
                latency = getattr(s, kind)
                for label, attr in QUANTILES:
                    summary.add_sample(
                        summary.name,
                        {"stage": s.name, "quantile": label},
                        getattr(latency, attr),
                    )
                total = latency.count * latency.mean if latency.count else 0.0
                summary.add_metric([s.name], latency.count, 0.0 if math.isnan(total) else total)
            yield summary
            largest = core.GaugeMetricFamily(
                f"{p}_{kind}_max_seconds", f"{doc[:-1]}: the largest sample.", labels=["stage"]
            )
            for s in stages:
                largest.add_metric([s.name], getattr(s, kind).max)
            yield largest
        abandoned = core.GaugeMetricFamily(
            f"{p}_abandoned", "Admitted events given up by a cancelled or failed run."
        )
        state = core.GaugeMetricFamily(
            f"{p}_state", "The graph's state: 1 for the current one.", labels=["state"]
        )
        if stats is not None:
            abandoned.add_metric([], stats.abandoned)
            for name in STATES:
                state.add_metric([name], 1.0 if stats.state == name else 0.0)
        yield abandoned
        yield state


def register_prometheus(
    running: RunningGraph, registry: CollectorRegistry | None = None, *, prefix: str = "aseda"
) -> PrometheusCollector:
    """Report a running graph to Prometheus: register a :class:`PrometheusCollector`.

    Args:
        running: the running graph to report.
        registry: the registry to join; prometheus_client's default ``REGISTRY`` if None
            (the one ``prometheus_client.start_http_server`` serves).
        prefix: the start of every metric name (another one for a second graph in the same
            registry, whose names would otherwise clash).

    Returns:
        The registered collector; call its ``unregister()`` when the graph is gone.

    Raises:
        ImportError: prometheus_client is not installed (``pip install aseda[prometheus]``).
        ValueError: the registry already has metrics of these names (another graph: use
            another ``prefix``).
    """
    collector = PrometheusCollector(running, prefix=prefix)
    if registry is None:
        registry = collector._core.REGISTRY
    assert registry is not None
    registry.register(collector)
    collector.registry = registry
    return collector
