"""Which stage holds the graph back now, and why: a pure reading of two snapshots.

No clock, no event loop: :func:`find_bottleneck` takes statistics and returns a verdict, so the
profiler, the graph view and controllers can all ask the same question the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._stage import DEFAULT_CAPACITY
from ._stats import GraphStats, StageStats

if TYPE_CHECKING:
    from ._graph import Graph

__all__ = ["Bottleneck", "find_bottleneck"]

#: an unbounded queue counts as long from this many events on (half the default capacity)
UNBOUNDED_LONG = DEFAULT_CAPACITY // 2


@dataclass(frozen=True, slots=True)
class Bottleneck:
    """The stage that holds the graph back, with the evidence.

    Attributes:
        stage: the stage's name.
        reason: what was seen, as a sentence fragment, e.g.
            ``"4/4 workers busy, queue 812/1000 and growing (+310 since last snapshot)"``.
        score: how strongly (compare scores of one graph only; higher is worse).
    """

    stage: str
    reason: str
    score: float

    def __str__(self) -> str:
        return f"{self.stage}: {self.reason}"


def find_bottleneck(
    current: GraphStats,
    previous: GraphStats | None = None,
    *,
    graph: Graph | None = None,
) -> Bottleneck | None:
    """Name the stage that is the bottleneck in ``current``, or None if no stage is.

    A stage is a candidate when **its workers are saturated** and **work piles up in front of
    it**:

    * saturated: every worker holds an event (``in_flight >= workers``), or the stage has no
      workers at all; a batch or blocking stage takes several events at a time, so for it
      events waiting in the queue while it holds some also count (an idle worker would have
      taken them);
    * work piles up, any of: the queue is long (at least half its capacity, or
      :data:`UNBOUNDED_LONG` events for an unbounded queue); senders are waiting for room in
      it (backpressure); the stage refused, shed, degraded or redirected events since
      ``previous``; or its queue grew since ``previous`` and holds at least one event per
      worker (a shorter queue drains within one service time).

    Each candidate gets a score: the queue's fill (length over capacity; over twice
    :data:`UNBOUNDED_LONG` for an unbounded queue, at most 1), plus its growth since
    ``previous`` on the same scale (at most 1), plus 0.5 if it is pushing back (refusing
    since ``previous``, or senders waiting for room). The highest score wins. Ties go to the
    stage declared later, which in a pipeline is the one further downstream.

    Backpressure makes the stages upstream of a bottleneck look saturated too: their workers
    hold events while they wait for room downstream, and their queues fill behind them. Given
    ``graph``, a candidate is set aside when a stage it feeds (along a next or route edge, not
    a back edge) is a candidate too, with a long queue or senders waiting for room: work
    already piles up further on, so a faster upstream stage would only pile up more there.

    Args:
        current: the snapshot to judge.
        previous: an earlier snapshot of the same graph; without it, growth and recent
            refusals are unknown and only the queue's length and waiting senders count.
        graph: the running graph's topology, to see through backpressure (see above).

    Returns:
        The bottleneck, or None when no stage is saturated with work piling up.
    """
    candidates: dict[str, Bottleneck] = {}
    for s in current:
        before = _find(previous, s.name)
        verdict = _judge(s, before)
        if verdict is not None:
            candidates[s.name] = verdict
    if graph is not None:
        backed_up = {n for n in candidates if n in graph and _backed_up(current[n])}
        blocked = {
            e.source
            for e in graph.edges
            if e.kind in ("next", "route") and not e.back and e.target in backed_up
        }
        if not blocked >= set(candidates):
            candidates = {n: b for n, b in candidates.items() if n not in blocked}
    best: Bottleneck | None = None
    for verdict in candidates.values():  # declaration order: a later stage wins a tie
        if best is None or verdict.score >= best.score:
            best = verdict
    return best


def _find(stats: GraphStats | None, name: str) -> StageStats | None:
    if stats is None:
        return None
    for s in stats:
        if s.name == name:
            return s
    return None


def _backed_up(s: StageStats) -> bool:
    """Whether a stage's queue is long or full, or senders wait for room in it."""
    long = s.capacity / 2 if not math.isinf(s.capacity) else UNBOUNDED_LONG
    return s.queue_length >= long or s.senders_waiting > 0


def refused(s: StageStats) -> int:
    """Events the stage turned away by any means: rejected, shed, degraded or redirected."""
    return s.rejected + s.shed + s.degraded + s.redirected


def _chunking(s: StageStats) -> bool:
    return bool(s.batch) or s.blocking


def _judge(s: StageStats, before: StageStats | None) -> Bottleneck | None:
    chunking = _chunking(s)
    saturated = (
        s.workers <= 0
        or s.in_flight >= s.workers
        or (chunking and s.in_flight > 0 and s.queue_length > 0)
    )
    if not saturated:
        return None
    bounded = not math.isinf(s.capacity)
    scale = s.capacity if bounded else 2.0 * UNBOUNDED_LONG
    full = bounded and s.queue_length >= s.capacity
    long = s.queue_length >= (s.capacity / 2 if bounded else UNBOUNDED_LONG)
    growth = s.queue_length - before.queue_length if before is not None else 0
    turned_away = refused(s) - refused(before) if before is not None else 0
    pushing_back = turned_away > 0 or s.senders_waiting > 0
    # A queue shorter than the pool drains within one service time: growth counts from there.
    growing = growth > 0 and s.queue_length >= max(1, s.workers)
    if not (long or full or growing or pushing_back):
        return None
    fill = min(1.0, s.queue_length / scale) if scale > 0 else 1.0
    grew = min(1.0, max(0, growth) / scale) if scale > 0 else float(growth > 0)
    score = fill + grew + (0.5 if pushing_back else 0.0)

    if s.workers <= 0:
        parts = ["no workers running"]
    elif chunking:
        parts = [f"{s.workers}/{s.workers} workers busy ({s.in_flight} events in hand)"]
    else:
        parts = [f"{min(s.in_flight, s.workers)}/{s.workers} workers busy"]
    if s.workers_min < s.workers_max <= s.workers:
        parts[0] += " (the most it may have)"
    queue = f"queue {s.queue_length}/{int(s.capacity)}" if bounded else f"queue {s.queue_length}"
    if not bounded:
        queue += " (unbounded)"
    elif full:
        queue += " (full)"
    if growth > 0:
        queue += f" and growing (+{growth} since last snapshot)"
    parts.append(queue)
    if turned_away > 0:
        parts.append(f"{turned_away} refused since last snapshot")
    if s.senders_waiting > 0:
        who = "sender" if s.senders_waiting == 1 else "senders"
        parts.append(f"{s.senders_waiting} {who} waiting for room")
    return Bottleneck(s.name, ", ".join(parts), round(score, 6))
