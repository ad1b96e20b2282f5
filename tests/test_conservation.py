"""Conservation: every event sent is processed, failed or refused at send, exactly once.

Random DAGs of random stages (async or blocking, per-event or batch, 1-3 workers, tiny
capacities, failing handlers, 'log' or dead-letter policies), fed by a mix of send() and
send_nowait(). Each stage records what it handled; the test then checks, edge by edge, that
what a stage received is exactly what its predecessors passed on, and that the run drained.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aseda

pytestmark = pytest.mark.anyio


@dataclass
class Spec:
    blocking: bool
    batch: int | None
    workers: int
    capacity: int
    fail_mod: int  # fail ids where (id + salt) % fail_mod == 0; 0 never fails
    dead_letter: bool
    ok: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


specs = st.builds(
    Spec,
    blocking=st.booleans(),
    batch=st.one_of(st.none(), st.integers(1, 4)),
    workers=st.integers(1, 3),
    capacity=st.integers(1, 6),
    fail_mod=st.sampled_from([0, 0, 2, 3, 7]),
    dead_letter=st.booleans(),
)


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[Spec], list[tuple[int, int]]]:
    nodes = draw(st.lists(specs, min_size=1, max_size=5))
    edges: set[tuple[int, int]] = set()
    for j in range(1, len(nodes)):
        edges.add((draw(st.integers(0, j - 1)), j))  # at least one way in
        for i in range(j - 1):
            if draw(st.booleans()) and draw(st.booleans()):
                edges.add((i, j))
    return nodes, sorted(edges)


def build(index: int, spec: Spec) -> aseda.Stage:
    def fails(x: int) -> bool:
        return spec.fail_mod > 0 and (x + index) % spec.fail_mod == 0

    on_error: Any = aseda.DeadLetter("dead") if spec.dead_letter else "log"
    options = dict(
        name=f"s{index}",
        capacity=spec.capacity,
        workers=spec.workers,
        batch=spec.batch,
        on_error=on_error,
    )
    if spec.batch and spec.blocking:

        def handler(xs: list[int]) -> list[int]:
            if any(fails(x) for x in xs):
                spec.failed.extend(xs)
                raise ValueError(xs)
            spec.ok.extend(xs)
            return xs

    elif spec.batch:

        async def handler(xs: list[int]) -> list[int]:  # type: ignore[misc]
            if any(fails(x) for x in xs):
                spec.failed.extend(xs)
                raise ValueError(xs)
            spec.ok.extend(xs)
            return xs

    elif spec.blocking:

        def handler(x: int) -> int:  # type: ignore[misc]
            if fails(x):
                spec.failed.append(x)
                raise ValueError(x)
            spec.ok.append(x)
            return x

    else:

        async def handler(x: int) -> int:  # type: ignore[misc]
            if fails(x):
                spec.failed.append(x)
                raise ValueError(x)
            spec.ok.append(x)
            return x

    return aseda.stage(**options)(handler)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shape=graphs(),
    sends=st.lists(st.booleans(), min_size=1, max_size=60),
)
async def test_every_event_accounted_for_once(
    shape: tuple[list[Spec], list[tuple[int, int]]], sends: list[bool]
) -> None:
    """sent == processed + failed + refused, per stage and per edge; the run drains."""
    nodes, edge_list = shape
    for spec in nodes:
        spec.ok.clear()
        spec.failed.clear()
    stages = [build(i, s) for i, s in enumerate(nodes)]
    dead: list[aseda.Failure] = []

    async def dead_handler(f: aseda.Failure) -> None:
        dead.append(f)

    parts: list[Any] = [stages[0], aseda.stage(name="dead")(dead_handler)]
    parts += [stages[i] >> stages[j] for i, j in edge_list]
    graph = aseda.Graph(*parts, entry="s0")

    refused: list[int] = []
    # A lost event would make the drain wait forever: fail the example instead of hanging.
    with anyio.fail_after(10):
        async with graph.run() as running:
            for event_id, wait in enumerate(sends):
                if wait:
                    await running.send(event_id)
                else:
                    try:
                        running.send_nowait(event_id)
                    except aseda.Rejected:
                        refused.append(event_id)
    stats = running.stats()

    # The entry stage saw each admitted id once; with the refused ones that is every id.
    entry = nodes[0]
    assert sorted(entry.ok + entry.failed + refused) == list(range(len(sends)))
    # Every other stage received exactly what its predecessors passed on.
    for j in range(1, len(nodes)):
        expected: Counter[int] = Counter()
        for i, k in edge_list:
            if k == j:
                expected.update(nodes[i].ok)
        assert Counter(nodes[j].ok + nodes[j].failed) == expected, f"stage s{j}"
    # Counters agree with what the handlers saw, and nothing is left in the graph.
    for i, spec in enumerate(nodes):
        s = stats[f"s{i}"]
        assert (s.processed, s.failed) == (len(spec.ok), len(spec.failed))
        assert s.admitted == s.processed + s.failed
        assert s.queue_length == s.in_flight == 0
    assert stats["s0"].rejected == len(refused)
    # Dead letters: one record per failed event of a dead-letter stage.
    expected_dead = Counter(
        (f"s{i}", x) for i, spec in enumerate(nodes) if spec.dead_letter for x in spec.failed
    )
    assert Counter((f.stage, f.event) for f in dead) == expected_dead
    assert stats.state == "stopped" and stats.in_graph == 0


# Load conditioning: every event offered is admitted, rejected at send, shed (counted by
# reason), degraded or redirected, and every admitted one is processed, failed or shed.


class TickClock:
    """A clock that moves 10 ms each time it is read, so buckets refill as the run goes."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


@dataclass
class Conditioned:
    capacity: int
    policy: str  # none, threshold, credits, bucket
    limit: int
    mode: str  # wait, shed, degrade, redirect
    overflow: str
    lifo: bool
    fail_mod: int
    passed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


conditioned = st.builds(
    Conditioned,
    capacity=st.integers(1, 4),
    policy=st.sampled_from(["none", "threshold", "credits", "bucket"]),
    limit=st.integers(1, 3),
    mode=st.sampled_from(["wait", "shed", "degrade", "redirect"]),
    overflow=st.sampled_from(["refuse", "drop_oldest"]),
    lifo=st.booleans(),
    fail_mod=st.sampled_from([0, 0, 3]),
).filter(lambda c: not (c.policy == "bucket" and c.mode == "wait"))


def build_conditioned(index: int, spec: Conditioned) -> aseda.Stage:
    policy: Any = {
        "none": None,
        "threshold": aseda.Threshold(spec.limit),
        "credits": aseda.Credits(spec.limit),
        "bucket": aseda.TokenBucket(rate=5, burst=spec.limit, clock=TickClock()),
    }[spec.policy]
    mode: Any = {
        "wait": "wait",
        "shed": "shed",
        "degrade": aseda.Degrade(lambda x: x),
        "redirect": aseda.Redirect("overflow"),
    }[spec.mode]

    async def handler(x: int) -> int:
        await anyio.lowlevel.checkpoint()  # let queues fill and policies bite
        if spec.fail_mod and (x + index) % spec.fail_mod == 0:
            spec.failed.append(x)
            raise ValueError(x)
        spec.passed.append(x)
        return x

    return aseda.stage(
        name=f"c{index}",
        capacity=spec.capacity,
        admission=policy,
        on_refuse=mode,
        overflow=spec.overflow,  # type: ignore[arg-type]
        order=aseda.AdaptiveLIFO(2) if spec.lifo else "fifo",
    )(handler)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    chain=st.lists(conditioned, min_size=1, max_size=4),
    sends=st.lists(st.sampled_from(["send", "nowait", "lossy"]), min_size=1, max_size=40),
)
async def test_conditioning_accounts_for_every_event(
    chain: list[Conditioned], sends: list[str]
) -> None:
    """sent = reached the end + failed + rejected at send + shed + redirected, each id once."""
    for spec in chain:
        spec.passed.clear()
        spec.failed.clear()
    stages = [build_conditioned(i, s) for i, s in enumerate(chain)]
    end: list[int] = []
    spilled: list[int] = []

    async def sink(x: int) -> None:
        end.append(x)

    async def overflow(x: int) -> None:
        spilled.append(x)

    flow: Any = stages[0]
    for s in stages[1:]:
        flow = flow >> s
    graph = aseda.Graph(
        flow >> aseda.stage(name="end", capacity=aseda.UNBOUNDED)(sink),
        aseda.stage(name="overflow", capacity=aseda.UNBOUNDED)(overflow),
        entry="c0",
    )
    rejected: list[int] = []
    with anyio.fail_after(10):
        async with graph.run() as running:
            for event_id, how in enumerate(sends):
                try:
                    if how == "send":
                        await running.send(event_id)
                    elif how == "nowait":
                        running.send_nowait(event_id)
                    elif not running.send_lossy(event_id):
                        rejected.append(event_id)
                except aseda.Rejected:
                    rejected.append(event_id)
    stats = running.stats()
    failed = [x for spec in chain for x in spec.failed]
    accounted = end + failed + rejected + spilled
    assert len(accounted) == len(set(accounted)), "an event was counted twice"
    shed = sum(s.shed for s in stats)
    assert len(accounted) + shed == len(sends)
    assert sum(s.rejected for s in stats) == len(rejected)
    assert stats["overflow"].processed == len(spilled) == sum(s.redirected for s in stats)
    for s in stats:
        assert s.queue_length == s.in_flight == 0, s.name
        assert sum(s.refusals.values()) == s.rejected + s.shed + s.degraded + s.redirected
    assert stats.state == "stopped" and stats.in_graph == 0
