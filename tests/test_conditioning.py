"""Load conditioning in a running graph: policies at the queue, and what a refusal becomes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

import aseda

pytestmark = pytest.mark.anyio


class Clock:
    """A hand-driven clock for token buckets and deadlines."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gated(name: str = "held", **options: Any) -> tuple[aseda.Stage, anyio.Event, list[Any]]:
    """A stage whose handler waits for a gate, recording the order it handles events in."""
    gate = anyio.Event()
    seen: list[Any] = []

    async def handler(x: Any) -> Any:
        await gate.wait()
        seen.append(x)
        return x

    return aseda.stage(name=name, **options)(handler), gate, seen


def collector(name: str = "sink") -> tuple[aseda.Stage, list[Any]]:
    seen: list[Any] = []

    async def sink(x: Any) -> Any:
        seen.append(x)
        return x

    return aseda.stage(name=name)(sink), seen


async def occupy(running: aseda.RunningGraph, first: Any = "first", to: str | None = None) -> None:
    """Send one event and wait until the stage's only worker is holding it."""
    running.send_nowait(first, to=to)
    await anyio.wait_all_tasks_blocked()


async def test_threshold_sheds_before_the_queue_is_full() -> None:
    """Threshold(2) refuses the third queued event; every kind of sender is told."""
    held, gate, _ = gated(capacity=10, admission=aseda.Threshold(2), on_refuse="shed")
    async with aseda.Graph(held).run() as running:
        await occupy(running)
        running.send_nowait(1)
        running.send_nowait(2)
        with pytest.raises(aseda.Rejected) as info:
            running.send_nowait(3)
        assert (info.value.reason, info.value.queue_length) == ("over threshold", 2)
        with pytest.raises(aseda.Rejected):
            await running.send(4)  # the stage's mode is "shed"
        assert running.send_lossy(5) is False
        with pytest.raises(aseda.Rejected):
            await running.call(6)
        gate.set()
    stats = running.stats()["held"]
    assert (stats.admitted, stats.rejected, stats.processed) == (3, 4, 3)
    assert stats.refusals == {"over threshold": 4}
    assert stats.admission == "Threshold(2)"


async def test_token_bucket_follows_its_clock() -> None:
    """A bucket of 2 at 10/s admits 2, refuses the third, and one more 0.1 s later."""
    clock = Clock()
    sink, seen = collector()
    bucket = aseda.TokenBucket(rate=10, burst=2, clock=clock)
    graph = aseda.Graph(aseda.stage(name="limited", admission=bucket)(sink.handler))
    async with graph.run() as running:
        running.send_nowait(1)
        running.send_nowait(2)
        with pytest.raises(aseda.Rejected, match="rate limited"):
            running.send_nowait(3)
        clock.now = 0.1
        running.send_nowait(4)
        with pytest.raises(aseda.Rejected):
            running.send_nowait(5)
    assert seen == [1, 2, 4]


async def test_waiting_sender_asks_a_swapped_policy() -> None:
    """send() waits on a refusing policy (backpressure) and gets in once the policy changes."""
    clock = Clock()
    sink, seen = collector()
    stage = aseda.stage(name="limited", admission=aseda.TokenBucket(1, 1, clock=clock))(
        sink.handler
    )
    async with aseda.Graph(stage).run() as running:
        await running.send(1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(running.send, 2)
            await anyio.wait_all_tasks_blocked()
            assert seen == [1] and running.stats()["limited"].senders_waiting == 1
            running.set_admission("limited", None)
        assert running.stats()["limited"].admission is None
    assert seen == [1, 2]


async def test_retry_after_wakes_a_waiting_sender_on_time() -> None:
    """A sender refused by a real-clock bucket waits retry_after and is then admitted."""
    sink, seen = collector()
    stage = aseda.stage(name="limited", admission=aseda.TokenBucket(rate=1000, burst=1))(
        sink.handler
    )
    async with aseda.Graph(stage).run() as running:
        for i in range(3):
            await running.send(i)  # the 2nd and 3rd wait ~1 ms each for a token
    assert seen == [0, 1, 2]


async def test_credits_bound_what_is_outstanding_downstream() -> None:
    """Credits(2): the upstream stage sends only while the downstream holds fewer than 2."""
    gate = anyio.Event()
    peak = 0

    @aseda.stage
    async def produce(x: int) -> int:
        return x

    @aseda.stage(admission=aseda.Credits(2), capacity=100)
    async def consume(x: int) -> int:
        nonlocal peak
        stats = running.stats()["consume"]
        peak = max(peak, stats.queue_length + stats.in_flight)
        await gate.wait()
        return x

    async with aseda.Graph(produce >> consume).run() as running:
        for i in range(6):
            running.send_nowait(i)
        await anyio.wait_all_tasks_blocked()
        stats = running.stats()
        assert stats["consume"].admitted == 2  # one in flight, one queued: no credit left
        assert stats["consume"].senders_waiting == 1  # the producer waits for a credit
        gate.set()
    assert running.stats()["consume"].processed == 6
    assert peak <= 2


async def test_per_class_refuses_lower_classes_first() -> None:
    """Two classes on a queue of 4: class 0 may fill half of it, class 1 all of it."""
    policy = aseda.PerClass({0: None, 1: None}, classify=lambda e: e[0])
    held, gate, seen = gated(capacity=4, admission=policy)
    async with aseda.Graph(held).run() as running:
        await occupy(running, (1, "x"))
        with pytest.raises(aseda.Rejected, match="unknown class 7"):
            running.send_nowait((7, "g"))
        running.send_nowait((0, "a"))
        running.send_nowait((0, "b"))
        with pytest.raises(aseda.Rejected, match="class 0 over its share"):
            running.send_nowait((0, "c"))
        running.send_nowait((1, "d"))
        running.send_nowait((1, "e"))
        with pytest.raises(aseda.Rejected, match="queue full"):
            running.send_nowait((1, "f"))
        gate.set()
    assert [e[1] for e in seen] == ["x", "a", "b", "d", "e"]


async def test_queue_deadline_sheds_once_the_queue_stands() -> None:
    """CoDel: after an interval whose shortest wait exceeded the target, late events are shed."""
    clock = Clock()
    deadline = aseda.QueueDeadline(target=0.005, interval=0.1, clock=clock)

    @aseda.stage(deadline=deadline)
    async def slow(x: int) -> int:
        clock.now += 0.05  # 50 ms of (simulated) service
        return x

    sink, seen = collector()
    async with aseda.Graph(slow >> sink).run() as running:
        running.send_many_nowait(range(9))  # all queued at t = 0, before the worker runs
        with pytest.raises(aseda.Rejected, match="deadline"):
            await running.call(9)
    # served at t = 0, .05, .1, .15; at t = .2 the last window's shortest wait (.1 s) was over
    # the 5 ms target, so everything still queued (waited > 10 ms) is shed, the call included
    assert seen == [0, 1, 2, 3]
    stats = running.stats()["slow"]
    assert (stats.processed, stats.shed, stats.refusals) == (4, 6, {"deadline": 6})
    assert stats.admitted == stats.processed + stats.shed


async def test_custom_policy_and_a_broken_one() -> None:
    """A callable refuses with its own reason; one that raises refuses with 'policy error'."""

    def odd_only(event: int, stage: aseda.StageView) -> str | None:
        assert stage.name == "picky" and stage.capacity == aseda.DEFAULT_CAPACITY
        return None if event % 2 else "even numbers are not served"

    def broken(event: int, stage: aseda.StageView) -> None:
        raise ZeroDivisionError

    sink, seen = collector()
    stage = aseda.stage(name="picky", admission=odd_only)(sink.handler)
    with capture_logs() as logs:
        async with aseda.Graph(stage).run() as running:
            running.send_nowait(1)
            with pytest.raises(aseda.Rejected, match="even numbers"):
                running.send_nowait(2)
            running.set_admission("picky", broken)
            with pytest.raises(aseda.Rejected, match="policy error"):
                running.send_nowait(3)
            assert running.send_lossy(5) is False
    assert seen == [1]
    assert running.stats()["picky"].refusals == {
        "even numbers are not served": 1,
        "policy error": 2,
    }
    assert [e["event"] for e in logs].count("admission policy failed; event refused") == 1


async def test_degrade_answers_with_the_cheap_handler() -> None:
    """On refusal, Degrade's handler answers and its value travels on to the next stage."""
    held, gate, _ = gated(capacity=1, on_refuse=aseda.Degrade(lambda x: f"busy {x}"))
    sink, seen = collector()
    async with aseda.Graph(held >> sink).run() as running:
        await occupy(running)
        running.send_nowait("queued")
        assert await running.call("late") == "busy late"
        await running.send("later")
        gate.set()
    assert seen == ["busy late", "busy later", "first", "queued"]
    stats = running.stats()["held"]
    assert (stats.degraded, stats.refusals) == (2, {"queue full": 2})


async def test_async_degrade_handler() -> None:
    """A Degrade handler may be async."""

    async def cached(x: str) -> str:
        return "cached " + x

    held, gate, _ = gated(capacity=1, on_refuse=aseda.Degrade(cached))
    async with aseda.Graph(held).run() as running:
        await occupy(running)
        running.send_nowait("queued")
        assert await running.call("late") == "cached late"
        gate.set()


async def test_redirect_sends_refused_events_elsewhere() -> None:
    """Redirect moves a refused event to a named stage, counted on the refusing one."""
    held, gate, _ = gated(capacity=1, on_refuse=aseda.Redirect("overflow"))
    overflow, seen = collector("overflow")
    async with aseda.Graph(held, overflow).run() as running:
        await occupy(running)
        running.send_nowait("queued")
        await running.send("spill")
        assert await running.call("spill2") == "spill2"
        gate.set()
    assert seen == ["spill", "spill2"]
    assert running.stats()["held"].redirected == 2


def test_mutual_redirects_are_refused_when_built() -> None:
    """Two stages redirecting to each other would pass an event back and forth: GraphError."""
    a, _, _ = gated("a", capacity=1, on_refuse=aseda.Redirect("b"))
    b, _, _ = gated("b", capacity=1, on_refuse=aseda.Redirect("a"))
    with pytest.raises(aseda.GraphError, match="leads back"):
        aseda.Graph(a, b)


async def test_redirect_chain_ends_in_the_last_stage_mode() -> None:
    """a -> b -> c by redirects: the event goes as far as it must, then c's mode applies."""
    a, gate_a, _ = gated("a", capacity=1, on_refuse=aseda.Redirect("b"))
    b, gate_b, _ = gated("b", capacity=1, on_refuse=aseda.Redirect("c"))
    c, gate_c, _ = gated("c", capacity=1, on_refuse="shed")
    async with aseda.Graph(a, b, c).run() as running:
        for name in "abc":
            await occupy(running, to=name)
            running.send_nowait("queued", to=name)
        with pytest.raises(aseda.Rejected, match="queue full") as info:
            await running.send("x", to="a")
        assert info.value.stage == "c"
        for gate in (gate_a, gate_b, gate_c):
            gate.set()
    stats = running.stats()
    assert (stats["a"].redirected, stats["b"].redirected, stats["c"].rejected) == (1, 1, 1)


def test_redirect_targets_checked_when_built() -> None:
    """A Redirect to an unknown stage, or to itself, is a GraphError."""
    held, _, _ = gated(on_refuse=aseda.Redirect("nowhere"))
    with pytest.raises(aseda.GraphError, match="nowhere"):
        aseda.Graph(held)
    held, _, _ = gated(on_refuse=aseda.Redirect("held"))
    with pytest.raises(aseda.GraphError, match="itself"):
        aseda.Graph(held)


async def test_internal_shed_is_counted_and_told_to_the_caller() -> None:
    """A downstream stage in shed mode drops what does not fit, and call() learns why."""

    @aseda.stage
    async def first(x: str) -> str:
        return x

    held, gate, seen = gated(capacity=1, on_refuse="shed")
    async with aseda.Graph(first >> held).run() as running:
        await occupy(running)
        await running.send("queued")
        await anyio.wait_all_tasks_blocked()
        await running.send("shed")
        with pytest.raises(aseda.Rejected, match="queue full") as info:
            await running.call("shed too")
        assert info.value.stage == "held"
        gate.set()
    assert seen == ["first", "queued"]
    stats = running.stats()
    assert (stats["held"].shed, stats["held"].rejected) == (2, 0)
    assert stats["first"].processed == 4


async def test_drop_oldest_makes_room_for_the_newest() -> None:
    """overflow='drop_oldest' admits the new event and sheds the oldest queued one."""
    held, gate, seen = gated(capacity=2, overflow="drop_oldest")
    async with aseda.Graph(held).run() as running:
        await occupy(running)
        async with anyio.create_task_group() as tg:
            outcome: list[str] = []

            async def oldest() -> None:
                try:
                    await running.call("oldest")
                except aseda.Rejected as exc:
                    outcome.append(exc.reason)

            tg.start_soon(oldest)
            await anyio.wait_all_tasks_blocked()
            running.send_nowait("middle")
            running.send_nowait("newest")
            gate.set()
    assert outcome == ["dropped oldest"]
    assert seen == ["first", "middle", "newest"]
    stats = running.stats()["held"]
    assert (stats.admitted, stats.processed, stats.shed) == (4, 3, 1)


async def test_adaptive_lifo_serves_newest_first_while_a_queue_stands() -> None:
    """With AdaptiveLIFO(3), the newest is served while 3+ wait, then order is FIFO again."""
    held, gate, seen = gated(order=aseda.AdaptiveLIFO(threshold=3))
    async with aseda.Graph(held).run() as running:
        await occupy(running, 1)
        for i in range(2, 7):
            running.send_nowait(i)
        gate.set()
    assert seen == [1, 6, 5, 4, 2, 3]


async def test_atomic_batches_all_or_none() -> None:
    """send_many_nowait admits a whole batch or none of it."""
    held, gate, seen = gated(capacity=3)
    async with aseda.Graph(held).run() as running:
        await occupy(running, 0)
        running.send_many_nowait([1, 2])
        with pytest.raises(aseda.Rejected, match="queue full"):
            running.send_many_nowait([3, 4])
        assert running.stats()["held"].queue_length == 2
        with pytest.raises(aseda.Rejected, match="exceeds the queue's capacity"):
            await running.send_many([9] * 4)
        gate.set()
        await running.send_many([5, 6, 7])
    assert seen == [0, 1, 2, 5, 6, 7]
    assert running.stats()["held"].rejected == 6


async def test_batch_against_a_token_bucket_takes_tokens_at_once() -> None:
    """A bucket admits a batch only if it holds a token for every event."""
    clock = Clock()
    sink, seen = collector()
    stage = aseda.stage(name="b", admission=aseda.TokenBucket(10, burst=3, clock=clock))(
        sink.handler
    )
    async with aseda.Graph(stage).run() as running:
        running.send_many_nowait([1, 2])
        with pytest.raises(aseda.Rejected, match="rate limited"):
            running.send_many_nowait([3, 4])  # one token left: none of the two goes in
        with pytest.raises(aseda.Rejected, match="burst"):
            running.send_many_nowait([5, 6, 7, 8])
        running.send_nowait(9)  # the token that was left
    assert seen == [1, 2, 9]


async def test_prepare_commit_abort() -> None:
    """A reservation holds room until commit or abort; leaving its block aborts."""
    held, gate, seen = gated(capacity=2)
    async with aseda.Graph(held).run() as running:
        await occupy(running, 0)
        reservation = running.prepare([1, 2])
        with pytest.raises(aseda.Rejected):
            running.send_nowait(99)  # the room is reserved
        reservation.abort()
        with pytest.raises(RuntimeError, match="already"):
            reservation.commit()
        with running.prepare(["dropped"]):
            pass  # aborted on exit
        with running.prepare([3, 4]) as kept:
            kept.commit()
        assert running.stats()["held"].queue_length == 2
        gate.set()
    assert seen == [0, 3, 4]


async def test_per_send_override() -> None:
    """send(on_refuse=...) and call(on_refuse=...) override the stage's default (wait)."""
    held, gate, _ = gated(capacity=1)
    async with aseda.Graph(held).run() as running:
        await occupy(running)
        running.send_nowait("queued")
        with pytest.raises(aseda.Rejected):
            await running.send("x", on_refuse="shed")
        assert await running.call("y", on_refuse=aseda.Degrade(str.upper)) == "Y"
        with pytest.raises(aseda.ConfigError, match="on_refuse"):
            await running.send("z", on_refuse="ignore")  # type: ignore[arg-type]
        with pytest.raises(aseda.ConfigError, match="no stage"):
            await running.send("z", on_refuse=aseda.Redirect("nowhere"))
        gate.set()


async def test_back_edges_skip_admission() -> None:
    """An event coming back round a cycle is not refused by the stage's policy."""

    @aseda.stage(admission=aseda.Threshold(1), on_refuse="shed", capacity=4)
    async def count(x: int) -> Any:
        return aseda.To("again", x - 1) if x > 0 else "done"

    @aseda.stage
    async def again(x: int) -> int:
        return x

    graph = aseda.Graph(count, count.routes_to(again), again >> count)
    async with graph.run() as running:
        assert await running.call(5) == "done"
    assert running.stats()["count"].processed == 6


async def test_a_caller_that_gave_up_is_not_served() -> None:
    """call()s whose callers were cancelled are shed at dequeue with reason 'caller gone'."""
    held, gate, seen = gated(capacity=100)
    async with aseda.Graph(held).run() as running:
        await occupy(running)
        with anyio.move_on_after(0) as scope:  # gives up at its first wait
            await running.call("abandoned")
        assert scope.cancelled_caught
        gate.set()
    assert seen == ["first"]
    stats = running.stats()["held"]
    assert (stats.shed, stats.refusals) == (1, {"caller gone": 1})


async def test_failed_calls_leave_no_reference_cycles() -> None:
    """A failed or shed call() leaves nothing for the cycle collector, on either path."""
    import gc

    @aseda.stage
    async def boom(x: int) -> int:
        raise ValueError(x)

    @aseda.stage
    def thread_boom(x: int) -> int:
        raise ValueError(x)

    @aseda.stage(batch=4)
    def batch_boom(xs: list[int]) -> list[int]:
        raise ValueError(xs)

    shed, gate, _ = gated("shed", capacity=1, on_refuse="shed")
    for stage in (boom, thread_boom, batch_boom, shed):
        async with aseda.Graph(stage).run() as running:
            if stage is shed:
                await occupy(running)
                running.send_nowait("queued")
            for i in range(3):  # warm up lazily created objects
                with pytest.raises(aseda.AsedaError if stage is shed else ValueError):
                    await running.call(i)
            gc.collect()
            gc.disable()
            try:
                for i in range(50):
                    with pytest.raises(aseda.AsedaError if stage is shed else ValueError):
                        await running.call(i)
                assert gc.collect() == 0, stage.name
            finally:
                gc.enable()
            gate.set()


async def test_queue_deadline_sheds_behind_a_handler_slower_than_the_interval() -> None:
    """Dequeues further apart than the interval still judge the queue (it never emptied)."""
    clock = Clock()

    @aseda.stage(deadline=aseda.QueueDeadline(target=0.005, interval=0.1, clock=clock))
    async def slow(x: int) -> int:
        clock.now += 0.2  # each event takes twice the interval
        return x

    sink, seen = collector()
    async with aseda.Graph(slow >> sink).run() as running:
        running.send_many_nowait(range(6))
    # t = 0: waited 0; t = .2: waited .2 (that interval's minimum); t = .4: overloaded, shed
    assert seen == [0, 1]
    assert running.stats()["slow"].refusals == {"deadline": 4}


def test_redirect_back_upstream_is_refused_when_built() -> None:
    """Redirecting to a stage that leads back to the refusing one would loop: GraphError."""

    @aseda.stage
    async def a(x: int) -> int:
        return x

    b, _, _ = gated("b", capacity=1, on_refuse=aseda.Redirect("a"))
    with pytest.raises(aseda.GraphError, match="leads back"):
        aseda.Graph(a >> b)


async def test_per_class_share_refusal_spends_no_token() -> None:
    """An event refused for its class's share takes no token from that class's bucket."""
    clock = Clock()
    bucket = aseda.TokenBucket(1, burst=2, clock=clock)
    policy = aseda.PerClass({0: bucket, 1: None}, classify=lambda e: e[0])
    held, gate, _ = gated(capacity=2, admission=policy)
    async with aseda.Graph(held).run() as running:
        await occupy(running, (1, "x"))
        running.send_nowait((1, "y"))  # class 0 may fill half of 2: the queue is at its share
        with pytest.raises(aseda.Rejected, match="share"):
            running.send_nowait((0, "z"))
        assert bucket.tokens == 2
        gate.set()


async def test_failing_degrade_tells_the_sender() -> None:
    """A Degrade handler that raises: send() gets Rejected('degrade failed'), counted."""

    def broken(x: str) -> str:
        raise KeyError(x)

    held, gate, _ = gated(capacity=1, on_refuse=aseda.Degrade(broken))
    async with aseda.Graph(held).run() as running:
        await occupy(running)
        running.send_nowait("queued")
        with pytest.raises(aseda.Rejected, match="degrade failed"):
            await running.send("late")
        assert running.send_lossy("lossy") is False
        gate.set()
    stats = running.stats()["held"]
    # the lossy send ignores on_refuse: refused for "queue full" and told with False
    assert (stats.rejected, stats.refusals) == (2, {"degrade failed": 1, "queue full": 1})
