"""Immutable snapshots of a running graph, read like anyio's stream statistics."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["GraphStats", "StageStats"]


@dataclass(frozen=True, slots=True)
class StageStats:
    """A snapshot of one stage.

    Conservation holds at every snapshot: every event offered to the stage was admitted,
    rejected (told to its sender), shed, degraded or redirected; and every admitted one is
    processed, failed, shed from the queue, queued or in flight.
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
    #: events shed: refused on the way in from an upstream stage, or dropped from the queue
    #: (drop-oldest, deadline); a ``call()`` among them gets Rejected
    shed: int = 0
    #: refused events answered by the stage's Degrade handler instead
    degraded: int = 0
    #: refused events sent to another stage by Redirect
    redirected: int = 0
    #: every refusal counted by reason ("queue full", "rate limited", "deadline", ...)
    refusals: dict[str, int] = field(default_factory=dict)
    #: the admission policy in force (its repr), or None
    admission: str | None = None


@dataclass(frozen=True, slots=True)
class GraphStats:
    """A snapshot of every stage of a running graph, in declaration order.

    Index it by stage name (``stats["parse"]``) or iterate over the :class:`StageStats`.
    """

    #: one snapshot per stage
    stages: tuple[StageStats, ...]
    #: ``"running"``, ``"draining"``, ``"stopped"`` or ``"cancelled"``
    state: str
    #: admitted events the run gave up on when it was cancelled or failed (0 otherwise)
    abandoned: int

    def __getitem__(self, name: str) -> StageStats:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def __iter__(self) -> Iterator[StageStats]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)

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
