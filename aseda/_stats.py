"""Immutable snapshots of a running graph, read like anyio's stream statistics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ._histogram import LatencySummary

if TYPE_CHECKING:
    from ._bottleneck import Bottleneck

__all__ = ["EMPTY_LATENCY", "GraphStats", "StageStats"]

#: The summary of a histogram with no samples.
EMPTY_LATENCY = LatencySummary(0, math.nan, math.nan, math.nan, 0.0, math.nan)


@dataclass(frozen=True, slots=True)
class StageStats:
    """A snapshot of one stage.

    Conservation holds at every snapshot: every event offered to the stage was admitted,
    rejected (told to its sender), shed, degraded or redirected; and
    ``admitted == processed + failed + dropped + queue_length + in_flight``.
    """

    #: the stage's name
    name: str
    #: events waiting in the queue now
    queue_length: int
    #: the most events the queue holds (``math.inf`` if unbounded)
    capacity: float
    #: live workers (tasks; for a blocking stage, each with its own thread)
    workers: int
    #: the pool's bounds
    workers_min: int
    workers_max: int
    #: the most events one handler call receives (``None``: a per-event handler)
    batch: int | None
    #: whether the handler runs on threads
    blocking: bool
    #: events put into the queue since the run began
    admitted: int
    #: events refused and reported to their sender (Rejected raised, or a lossy send's False)
    rejected: int
    #: events whose handler returned (whatever it emitted, DROP included)
    processed: int
    #: events whose handler raised (or routed to an undeclared stage)
    failed: int
    #: events taken from the queue and not yet finished
    in_flight: int
    #: tasks waiting for room in the queue (backpressure): senders and upstream workers
    senders_waiting: int
    #: events shed: refused on the way in from an upstream stage (or by a failing Degrade
    #: handler), or dropped from the queue (drop-oldest, deadline, a caller that gave up);
    #: a ``call()`` among them gets Rejected
    shed: int = 0
    #: of the shed events, those dropped from the queue after they were admitted
    #: (drop-oldest, deadline, a caller that gave up)
    dropped: int = 0
    #: refused events answered by the stage's Degrade handler instead
    degraded: int = 0
    #: refused events sent to another stage by Redirect
    redirected: int = 0
    #: every refusal counted by reason ("queue full", "rate limited", "deadline", ...)
    refusals: dict[str, int] = field(default_factory=dict)
    #: the admission policy in force (its repr), or None
    admission: str | None = None
    #: time sampled events waited in the queue, seconds
    queue_wait: LatencySummary = EMPTY_LATENCY
    #: time the handler took per sampled event, seconds
    service: LatencySummary = EMPTY_LATENCY
    #: time from entering the graph to leaving this stage, per sampled event, seconds;
    #: at a stage with no successors this is the end-to-end response time
    response: LatencySummary = EMPTY_LATENCY
    #: ``response`` over only the last one to two seconds (the others cover the whole run)
    recent_response: LatencySummary = EMPTY_LATENCY
    #: events processed per second: over the window since the previous snapshot taken at
    #: least a second earlier (over the run so far, before the first full second)
    throughput: float = 0.0
    #: the names of the controllers tuning this stage (empty when none, or switched off)
    control: tuple[str, ...] = ()
    #: the last controller decision: "controller: why"
    last_decision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nan becomes None)."""
        data: dict[str, Any] = _jsonable(asdict(self))
        return data


@dataclass(frozen=True, slots=True)
class GraphStats:
    """A snapshot of every stage of a running graph, in declaration order.

    Index it by stage name (``stats["parse"]``) or iterate over the :class:`StageStats`.
    """

    #: one snapshot per stage
    stages: tuple[StageStats, ...]
    #: ``"starting"`` (init hooks running), ``"running"``, ``"draining"``, ``"stopped"`` or
    #: ``"cancelled"``
    state: str
    #: admitted events the run gave up on when it was cancelled or failed (0 otherwise)
    abandoned: int
    #: when the snapshot was taken (``time.monotonic()``), and seconds since the run began
    time: float = 0.0
    elapsed: float = 0.0
    #: the stage holding the graph back now and why (see :func:`aseda.find_bottleneck`,
    #: judged against the previous snapshot), or None
    bottleneck: Bottleneck | None = None

    def __getitem__(self, name: str) -> StageStats:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def __iter__(self) -> Iterator[StageStats]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: graph fields and a list of stage dicts (nan becomes None)."""
        return {
            "state": self.state,
            "abandoned": self.abandoned,
            "time": self.time,
            "elapsed": self.elapsed,
            "bottleneck": None if self.bottleneck is None else asdict(self.bottleneck),
            "stages": [s.to_dict() for s in self.stages],
        }

    @property
    def in_graph(self) -> int:
        """Events admitted and not yet finished, over every stage."""
        return sum(s.queue_length + s.in_flight for s in self.stages)

    def __str__(self) -> str:
        cols = ("stage", "queue", "workers", "admitted", "rejected", "processed", "failed")
        rows = [
            (
                s.name,
                f"{s.queue_length}/{'inf' if s.capacity == float('inf') else int(s.capacity)}",
                str(s.workers),
                str(s.admitted),
                str(s.rejected),
                str(s.processed),
                str(s.failed),
            )
            for s in self.stages
        ]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*cols), *(fmt.format(*r) for r in rows)]
        lines.append(f"state: {self.state}, abandoned: {self.abandoned}")
        return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
