"""OpenTelemetry export: observable instruments over a running graph's statistics.

Only the OpenTelemetry metrics API is needed (``pip install aseda[otel]``); the application
chooses the SDK, readers and exporters. This module imports it only when instruments are made,
so ``import aseda`` never needs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ._prometheus import COUNTERS, LATENCIES, QUANTILES, SnapshotReader
from ._stats import GraphStats

if TYPE_CHECKING:
    from types import TracebackType

    from opentelemetry.metrics import CallbackOptions, Meter, Observation

    from ._runtime import RunningGraph

__all__ = ["OtelInstruments", "instrument_otel"]

_MISSING = "aseda's OpenTelemetry export needs opentelemetry-api: pip install 'aseda[otel]'"

#: StageStats fields observed as gauges: (instrument suffix, field, unit, description).
_GAUGES: tuple[tuple[str, str, str, str], ...] = (
    ("queue.length", "queue_length", "{event}", "Events waiting in the stage's queue."),
    ("queue.capacity", "capacity", "{event}", "The most events the stage's queue holds."),
    ("workers", "workers", "{worker}", "Live workers of the stage."),
    ("in_flight", "in_flight", "{event}", "Events taken from the queue and not yet finished."),
    ("senders_waiting", "senders_waiting", "{task}", "Tasks waiting for room in the queue."),
    ("throughput", "throughput", "{event}/s", "Events processed per second, lately."),
)

_Callback = Callable[["CallbackOptions"], Iterable["Observation"]]


class OtelInstruments:
    """The observable instruments reporting a running graph, from :func:`instrument_otel`.

    The OpenTelemetry API cannot remove an instrument once made; :meth:`close` makes every
    callback observe nothing from then on and lets go of the graph. Usable as a context
    manager that closes on exit.
    """

    def __init__(self, running: RunningGraph) -> None:
        self._reader: SnapshotReader | None = SnapshotReader(running)
        #: the instruments made, in the order made
        self.instruments: tuple[Any, ...] = ()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._reader is None

    def close(self) -> None:
        """Stop reporting: every callback returns no observation from now on."""
        self._reader = None

    def __enter__(self) -> OtelInstruments:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _snapshot(self) -> GraphStats | None:
        reader = self._reader
        return None if reader is None else reader.read()

    def _per_stage(self, field: str) -> _Callback:
        from opentelemetry.metrics import Observation

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            stats = self._snapshot()
            if stats is None:
                return []
            out = []
            for s in stats:
                value = getattr(s, field)
                if isinstance(value, float) and not math.isfinite(value):
                    continue  # an unbounded queue's capacity; an exporter may not take inf
                out.append(Observation(value, {"stage": s.name}))
            return out

        return observe

    def _refusals(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        stats = self._snapshot()
        if stats is None:
            return []
        return [
            Observation(count, {"stage": s.name, "reason": reason})
            for s in stats
            for reason, count in sorted(s.refusals.items())
        ]

    def _latency(self, kind: str) -> _Callback:
        from opentelemetry.metrics import Observation

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            stats = self._snapshot()
            if stats is None:
                return []
            out = []
            for s in stats:
                latency = getattr(s, kind)
                for label, attr in QUANTILES:
                    value = getattr(latency, attr)
                    if latency.count and not math.isnan(value):
                        out.append(Observation(value, {"stage": s.name, "quantile": label}))
            return out

        return observe

    def _abandoned(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        stats = self._snapshot()
        return [] if stats is None else [Observation(stats.abandoned)]


def instrument_otel(
    running: RunningGraph, meter: Meter | None = None, *, prefix: str = "aseda"
) -> OtelInstruments:
    """Report a running graph through OpenTelemetry observable instruments.

    Every instrument has a ``stage`` attribute. Observable counters ``<prefix>.admitted``,
    ``.rejected``, ``.processed``, ``.failed``, ``.shed``, ``.dropped``, ``.degraded``,
    ``.redirected`` and ``.refusals`` (attributes ``stage`` and ``reason``), unit
    ``{event}``; observable gauges ``<prefix>.queue.length``, ``.queue.capacity`` (not
    reported for an unbounded queue), ``.workers``, ``.in_flight``, ``.senders_waiting``,
    ``.throughput`` (``{event}/s``); the gauges ``<prefix>.queue_wait``, ``.service`` and
    ``.response`` in seconds, with a ``quantile`` attribute (``"0.5"``, ``"0.9"``,
    ``"0.99"``; reported once a stage has samples); and the gauge ``<prefix>.abandoned``.

    Each callback takes its own :meth:`aseda.RunningGraph.stats` snapshot when the SDK's
    reader collects. A reader collecting on its own thread (``PeriodicExportingMetricReader``)
    has the snapshot taken on the event loop's thread; call this inside the
    ``async with graph.run()`` block, on that thread. Close the handle before shutting the
    meter provider down from the event loop's thread, or the final collection waits up to a
    second for the loop it blocks.

    Args:
        running: the running graph to report.
        meter: the meter to make the instruments with; if None,
            ``opentelemetry.metrics.get_meter("aseda")`` (the global meter provider's).
        prefix: the start of every instrument name.

    Returns:
        The instruments' handle; ``close()`` it when the graph is gone.

    Raises:
        ImportError: opentelemetry-api is not installed (``pip install aseda[otel]``).
    """
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    if meter is None:
        meter = metrics.get_meter("aseda")
    handle = OtelInstruments(running)
    made: list[Any] = []
    for field, doc in COUNTERS:
        made.append(
            meter.create_observable_counter(
                f"{prefix}.{field}", [handle._per_stage(field)], "{event}", doc
            )
        )
    made.append(
        meter.create_observable_counter(
            f"{prefix}.refusals",
            [handle._refusals],
            "{event}",
            "Refusals of events by the stage, by reason.",
        )
    )
    for suffix, field, unit, doc in _GAUGES:
        made.append(
            meter.create_observable_gauge(
                f"{prefix}.{suffix}", [handle._per_stage(field)], unit, doc
            )
        )
    for kind, doc in LATENCIES:
        made.append(
            meter.create_observable_gauge(
                f"{prefix}.{kind}", [handle._latency(kind)], "s", f"{doc[:-1]}, by quantile."
            )
        )
    made.append(
        meter.create_observable_gauge(
            f"{prefix}.abandoned",
            [handle._abandoned],
            "{event}",
            "Admitted events given up by a cancelled or failed run.",
        )
    )
    handle.instruments = tuple(made)
    return handle
