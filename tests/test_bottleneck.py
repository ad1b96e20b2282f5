"""find_bottleneck on hand-built snapshots: saturation, growth, refusals, ties, backpressure."""

from __future__ import annotations

import math
from typing import Any

import pytest

import aseda
from aseda._bottleneck import UNBOUNDED_LONG, Bottleneck, find_bottleneck


def snap(name: str, **fields: Any) -> aseda.StageStats:
    """A stage's snapshot: 4 idle workers and an empty queue of 1000 unless told otherwise."""
    values: dict[str, Any] = {
        "name": name,
        "queue_length": 0,
        "capacity": 1000,
        "workers": 4,
        "workers_min": 4,
        "workers_max": 4,
        "batch": None,
        "blocking": False,
        "admitted": 0,
        "rejected": 0,
        "processed": 0,
        "failed": 0,
        "in_flight": 0,
        "senders_waiting": 0,
    }
    values.update(fields)
    return aseda.StageStats(**values)


def graph_stats(*stages: aseda.StageStats) -> aseda.GraphStats:
    """A running graph's snapshot of these stages."""
    return aseda.GraphStats(stages=stages, state="running", abandoned=0)


def test_idle_graph_has_no_bottleneck() -> None:
    """Nothing queued and nothing in flight: no bottleneck."""
    assert find_bottleneck(graph_stats(snap("a"), snap("b"))) is None


def test_long_queue_without_saturated_workers_is_not_a_bottleneck() -> None:
    """A long queue while a worker is free is a moment's lag, not a bottleneck."""
    stats = graph_stats(snap("a", queue_length=900, in_flight=3))
    assert find_bottleneck(stats) is None


def test_saturated_with_empty_steady_queue_is_not_a_bottleneck() -> None:
    """Every worker busy but nothing waiting, and no growth: the stage keeps up."""
    before = graph_stats(snap("a", queue_length=2, in_flight=4))
    now = graph_stats(snap("a", queue_length=2, in_flight=4))
    assert find_bottleneck(now, before) is None


def test_saturated_with_long_queue() -> None:
    """Saturated workers and a queue past half its capacity make a bottleneck."""
    stats = graph_stats(snap("a"), snap("b", queue_length=600, in_flight=4))
    assert find_bottleneck(stats) == Bottleneck("b", "4/4 workers busy, queue 600/1000", 0.6)


def test_growing_queue() -> None:
    """A queue that grew since the previous snapshot is named with its growth."""
    before = graph_stats(snap("lookup", queue_length=502, in_flight=4))
    now = graph_stats(snap("lookup", queue_length=812, in_flight=4))
    found = find_bottleneck(now, before)
    assert found == Bottleneck(
        "lookup",
        "4/4 workers busy, queue 812/1000 and growing (+310 since last snapshot)",
        1.122,
    )
    assert str(found) == f"lookup: {found.reason}"


def test_growth_counts_once_the_queue_outnumbers_the_workers() -> None:
    """A short queue that grew is noise until it holds at least one event per worker."""
    before = graph_stats(snap("a", queue_length=0, in_flight=4))
    assert find_bottleneck(graph_stats(snap("a", queue_length=3, in_flight=4)), before) is None
    found = find_bottleneck(graph_stats(snap("a", queue_length=4, in_flight=4)), before)
    assert found is not None
    assert found.reason == "4/4 workers busy, queue 4/1000 and growing (+4 since last snapshot)"


def test_full_queue_refusing_since_previous() -> None:
    """A full queue that refused events since the previous snapshot says so."""
    before = graph_stats(snap("a", queue_length=1000, in_flight=4, rejected=10, shed=5))
    now = graph_stats(snap("a", queue_length=1000, in_flight=4, rejected=30, shed=25))
    found = find_bottleneck(now, before)
    assert found == Bottleneck(
        "a", "4/4 workers busy, queue 1000/1000 (full), 40 refused since last snapshot", 1.5
    )


def test_refusals_without_previous_are_not_recent() -> None:
    """Without a previous snapshot, the run's total refusals do not count as pushing back."""
    stats = graph_stats(snap("a", queue_length=1, in_flight=4, rejected=99))
    assert find_bottleneck(stats) is None


def test_degraded_and_redirected_count_as_refused() -> None:
    """Events degraded or redirected since the previous snapshot count as refusals."""
    before = graph_stats(snap("a", in_flight=4))
    now = graph_stats(snap("a", in_flight=4, degraded=2, redirected=3))
    found = find_bottleneck(now, before)
    assert found is not None
    assert found.reason == "4/4 workers busy, queue 0/1000, 5 refused since last snapshot"


def test_senders_waiting() -> None:
    """Senders waiting for room are backpressure, even without a previous snapshot."""
    found = find_bottleneck(graph_stats(snap("a", queue_length=3, in_flight=4, senders_waiting=1)))
    assert found == Bottleneck(
        "a", "4/4 workers busy, queue 3/1000, 1 sender waiting for room", 0.503
    )


def test_highest_score_wins() -> None:
    """Of two candidates, the fuller queue is the bottleneck, wherever it is declared."""
    stats = graph_stats(
        snap("a", queue_length=900, in_flight=4), snap("b", queue_length=600, in_flight=4)
    )
    found = find_bottleneck(stats)
    assert found is not None and found.stage == "a"


def test_tie_goes_to_the_stage_declared_later() -> None:
    """Equal scores: the later (downstream) stage is named."""
    stats = graph_stats(
        snap("a", queue_length=700, in_flight=4),
        snap("b", queue_length=700, in_flight=4),
        snap("c"),
    )
    found = find_bottleneck(stats)
    assert found is not None and found.stage == "b"


def test_graph_sees_through_backpressure() -> None:
    """Given the graph, a stage whose successor is backed up is set aside for it."""

    async def handler(x: Any) -> Any:
        return x

    a, b, c = (aseda.stage(name=n)(handler) for n in "abc")
    graph = aseda.Graph(a >> b >> c)
    stats = graph_stats(
        snap("a", queue_length=1000, in_flight=4, senders_waiting=7),
        snap("b", queue_length=600, in_flight=4, senders_waiting=4),
        snap("c"),
    )
    blind = find_bottleneck(stats)
    assert blind is not None and blind.stage == "a"
    found = find_bottleneck(stats, graph=graph)
    assert found is not None and found.stage == "b"


def test_graph_keeps_upstream_when_downstream_is_only_busy() -> None:
    """A successor that is saturated but not backed up does not hide the real bottleneck."""

    async def handler(x: Any) -> Any:
        return x

    a, b = (aseda.stage(name=n)(handler) for n in "ab")
    graph = aseda.Graph(a >> b)
    before = graph_stats(snap("a", queue_length=900, in_flight=4), snap("b", in_flight=4))
    now = graph_stats(
        snap("a", queue_length=1000, in_flight=4, senders_waiting=2),
        snap("b", queue_length=5, in_flight=4),
    )
    found = find_bottleneck(now, before, graph=graph)
    assert found is not None and found.stage == "a"


def test_batch_stage_with_waiting_events_is_saturated() -> None:
    """A batch stage holding events while more wait counts every worker as busy."""
    stats = graph_stats(snap("b", batch=32, workers=2, in_flight=40, queue_length=700))
    found = find_bottleneck(stats)
    assert found is not None
    assert found.reason == "2/2 workers busy (40 events in hand), queue 700/1000"


def test_unbounded_queue() -> None:
    """An unbounded queue is long from UNBOUNDED_LONG events on and scored on twice that."""
    stage = snap("u", capacity=math.inf, in_flight=4, queue_length=UNBOUNDED_LONG)
    found = find_bottleneck(graph_stats(stage))
    assert found == Bottleneck("u", f"4/4 workers busy, queue {UNBOUNDED_LONG} (unbounded)", 0.5)
    shorter = snap("u", capacity=math.inf, in_flight=4, queue_length=UNBOUNDED_LONG - 1)
    assert find_bottleneck(graph_stats(shorter)) is None


@pytest.mark.parametrize(
    ("workers", "note"), [(16, " (the most it may have)"), (8, "")], ids=["at-max", "below"]
)
def test_pool_at_its_maximum(workers: int, note: str) -> None:
    """A resizable pool already at its maximum says so."""
    stage = snap(
        "a", workers=workers, workers_min=1, workers_max=16, in_flight=workers, queue_length=600
    )
    found = find_bottleneck(graph_stats(stage))
    assert found is not None
    assert found.reason == f"{workers}/{workers} workers busy{note}, queue 600/1000"


def test_no_workers() -> None:
    """A stage with no workers and a queue piling up is a bottleneck."""
    found = find_bottleneck(graph_stats(snap("a", workers=0, workers_min=0, queue_length=500)))
    assert found == Bottleneck("a", "no workers running, queue 500/1000", 0.5)
