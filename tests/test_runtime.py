"""A running graph: feeding, answers, drain, backpressure, topology, workers, hooks."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest

import aseda

pytestmark = pytest.mark.anyio


def collector(name: str = "sink", **options: Any) -> tuple[aseda.Stage, list[Any]]:
    """A terminal stage that records what reaches it."""
    seen: list[Any] = []

    async def sink(x: Any) -> Any:
        seen.append(x)
        return x

    return aseda.stage(name=name, **options)(sink), seen


async def test_readme_pipeline() -> None:
    """The README's three-stage pipeline: async, blocking and batch stages answer call()."""

    @aseda.stage(capacity=1000, workers=(1, 16))
    async def parse(raw: bytes) -> str:
        return raw.decode()

    @aseda.stage(blocking=True)
    def load(req: str) -> str:
        assert threading.current_thread() is not threading.main_thread()
        return req.upper()

    @aseda.stage(batch=64)
    async def send(pages: list[str]) -> list[str]:
        return [p + "!" for p in pages]

    graph = aseda.Graph(parse >> load >> send)
    async with graph.run() as running:
        await running.send(b"a")
        running.send_nowait(b"b")
        assert await running.call(b"xyz") == "XYZ!"
    stats = running.stats()
    assert stats.state == "stopped"
    assert [(s.name, s.admitted, s.processed, s.failed) for s in stats] == [
        ("parse", 3, 3, 0),
        ("load", 3, 3, 0),
        ("send", 3, 3, 0),
    ]
    assert stats["parse"].capacity == 1000 and stats["parse"].workers_max == 16


async def test_drain_finishes_every_event() -> None:
    """Leaving the block finishes every admitted event, in order for one worker each."""

    async def slow(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x * 2

    sink, seen = collector()
    graph = aseda.Graph(aseda.stage(slow, capacity=8) >> sink)
    async with graph.run() as running:
        for i in range(500):
            await running.send(i)
    assert seen == [i * 2 for i in range(500)]
    assert running.stats().in_graph == 0


async def test_backpressure_and_rejection() -> None:
    """A full queue refuses send_nowait and makes send wait until there is room."""
    gate = anyio.Event()
    started = anyio.Event()

    @aseda.stage(capacity=2)
    async def held(x: int) -> int:
        started.set()
        await gate.wait()
        return x

    done: list[int] = []
    async with aseda.Graph(held).run() as running:
        await running.send(0)  # taken by the worker, which then waits on the gate
        await started.wait()
        await running.send(1)
        await running.send(2)  # the queue (capacity 2) is now full
        with pytest.raises(aseda.Rejected) as info:
            running.send_nowait(3)
        assert (info.value.stage, info.value.reason, info.value.queue_length) == (
            "held",
            "queue full",
            2,
        )

        async def blocked_send() -> None:
            await running.send(4)
            done.append(4)

        async with anyio.create_task_group() as tg:
            tg.start_soon(blocked_send)
            await anyio.wait_all_tasks_blocked()
            assert done == []  # still waiting for room
            gate.set()
        assert done == [4]
    stats = running.stats()["held"]
    assert (stats.admitted, stats.rejected, stats.processed) == (4, 1, 4)


async def test_closed_after_exit_and_for_waiting_senders() -> None:
    """After the block, and for senders waiting when drain begins, the graph is closed."""
    gate = anyio.Event()

    @aseda.stage(capacity=1)
    async def held(x: int) -> int:
        await gate.wait()
        return x

    errors: list[BaseException] = []

    async def late_sender(running: aseda.RunningGraph) -> None:
        try:
            await running.send(99)
        except aseda.GraphClosed as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg, aseda.Graph(held).run() as running:
        await running.send(1)
        await anyio.wait_all_tasks_blocked()
        await running.send(2)  # fills the queue
        tg.start_soon(late_sender, running)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert len(errors) == 1
    with pytest.raises(aseda.GraphClosed):
        await running.send(3)
    with pytest.raises(aseda.GraphClosed):
        running.send_nowait(3)
    assert running.stats()["held"].processed == 2


async def test_fan_out_broadcasts_and_fan_in_merges() -> None:
    """a >> [b, c] >> d: b and c each see every event, d sees both copies."""

    async def a(x: int) -> int:
        return x

    async def b(x: int) -> tuple[str, int]:
        return ("b", x)

    async def c(x: int) -> tuple[str, int]:
        return ("c", x)

    d, seen = collector("d")
    graph = aseda.Graph(aseda.stage(a) >> [aseda.stage(b), aseda.stage(c)] >> d)
    async with graph.run() as running:
        for i in range(10):
            await running.send(i)
        assert await running.call(100) in (("b", 100), ("c", 100))
    assert sorted(seen) == sorted(
        [("b", i) for i in [*range(10), 100]] + [("c", i) for i in [*range(10), 100]]
    )


async def test_filter_flat_map_and_route() -> None:
    """DROP filters, Many flat-maps, To routes to a declared stage only."""

    @aseda.stage
    async def split(line: str) -> Any:
        if not line:
            return aseda.DROP
        return aseda.Many(line.split())

    @aseda.stage
    async def classify(word: str) -> Any:
        return aseda.To("numbers", int(word)) if word.isdigit() else word

    words, seen_words = collector("words")
    numbers, seen_numbers = collector("numbers")
    graph = aseda.Graph(split >> classify >> words, classify.routes_to(numbers))
    async with graph.run() as running:
        await running.send("a 1 b 22")
        await running.send("")
        assert await running.call("x y") == "x"  # the first final value wins
        assert await running.call("7") == 7
        with pytest.raises(aseda.Dropped) as info:
            await running.call("")
        assert info.value.stage == "split"
    assert seen_words == ["a", "b", "x", "y"]
    assert seen_numbers == [1, 22, 7]
    assert running.stats()["split"].processed == 5


async def test_undeclared_route_fails_the_event() -> None:
    """Routing to a stage with no edge is a RoutingError: counted, and raised to call()."""

    @aseda.stage
    async def bad(x: int) -> Any:
        return aseda.To("elsewhere", x)

    sink, seen = collector()
    async with aseda.Graph(bad >> sink).run() as running:
        await running.send(1)
        with pytest.raises(aseda.RoutingError, match="elsewhere"):
            await running.call(2)
    assert running.stats()["bad"].failed == 2 and seen == []


async def test_cycle_cache_miss_feeds_back_without_deadlock() -> None:
    """The Haboob shape: a miss goes to a blocking loader and back into the cache."""
    cache: dict[int, str] = {}

    @aseda.stage(capacity=1)
    async def lookup(key: Any) -> Any:
        if isinstance(key, tuple):  # a loaded page coming back
            cache[key[0]] = key[1]
            return key[1]
        if key in cache:
            return cache[key]
        return aseda.To("load", key)

    @aseda.stage(capacity=1, blocking=True)
    def load(key: int) -> tuple[int, str]:
        return (key, f"page{key}")

    send, seen = collector(capacity=1)
    graph = aseda.Graph(lookup >> send, lookup.routes_to(load), load >> lookup)
    assert [e for e in graph.edges if e.back] == [aseda.Edge("load", "lookup", "next", True)]
    async with graph.run() as running:
        for key in [1, 2, 1, 3, 2] * 20:
            await running.send(key)
        assert await running.call(9) == "page9"
    assert sorted(set(seen)) == ["page1", "page2", "page3", "page9"]
    assert len(seen) == 101


async def test_batch_handler_gets_lists_without_waiting() -> None:
    """A batch handler gets up to `batch` events at once and never waits for a full batch."""
    sizes: list[int] = []

    @aseda.stage(batch=8)
    async def batched(xs: list[int]) -> list[int]:
        sizes.append(len(xs))
        return [x + 1 for x in xs]

    sink, seen = collector()
    async with aseda.Graph(batched >> sink).run() as running:
        assert await running.call(1) == 2  # a single event is not held back
        for i in range(100):
            running.send_nowait(i)
    assert max(sizes) == 8 and sizes[0] == 1
    assert sorted(seen) == sorted([2, *range(1, 101)])


async def test_batch_handler_wrong_length_fails_each_event() -> None:
    """A batch handler must return None or one output per event."""

    @aseda.stage(batch=4)
    async def short(xs: list[int]) -> list[int]:
        return xs[:1]

    sink, _ = collector()
    async with aseda.Graph(short >> sink).run() as running:
        running.send_nowait(1)
        running.send_nowait(2)
        with pytest.raises(TypeError, match="one output per event"):
            await running.call(3)  # handled in one batch with 1 and 2
    assert running.stats()["short"].failed == 3


async def test_terminal_batch_returning_none_answers_none() -> None:
    """A terminal batch stage that returns None gives call() None."""

    @aseda.stage(batch=16)
    async def write(xs: list[int]) -> None:
        return None

    async with aseda.Graph(write).run() as running:
        assert await running.call(1) is None


async def test_workers_resize_while_running() -> None:
    """set_workers grows the pool at once and retires surplus workers between events."""
    gate = anyio.Event()
    active = 0
    peak = 0

    @aseda.stage(workers=(1, 4))
    async def io(x: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await gate.wait()
        active -= 1
        return x

    async with aseda.Graph(io).run() as running:
        running.set_workers("io", 4)
        assert running.stats()["io"].workers == 4
        for i in range(8):
            running.send_nowait(i)
        await anyio.wait_all_tasks_blocked()
        assert peak == 4  # four events handled side by side
        gate.set()
        await anyio.wait_all_tasks_blocked()
        running.set_workers("io", 1)
        await anyio.wait_all_tasks_blocked()
        assert running.stats()["io"].workers == 1
        with pytest.raises(aseda.ConfigError, match=r"\[1, 4\]"):
            running.set_workers("io", 5)
        with pytest.raises(aseda.ConfigError, match="no stage"):
            running.set_workers("nope", 1)
    assert running.stats()["io"].processed == 8


async def test_blocking_stage_threads_resize() -> None:
    """A blocking stage's threads follow its worker count and are gone after the run."""
    names: set[str] = set()
    barrier = threading.Barrier(3, timeout=10)

    @aseda.stage(workers=(1, 3))
    def work(x: int) -> int:
        names.add(threading.current_thread().name)
        barrier.wait()  # only passes when three threads run side by side
        return x

    async with aseda.Graph(work).run() as running:
        running.set_workers("work", 3)
        results = []
        async with anyio.create_task_group() as tg:
            for i in range(3):

                async def one(i: int = i) -> None:
                    results.append(await running.call(i))

                tg.start_soon(one)
        assert sorted(results) == [0, 1, 2]
        assert len([t for t in threading.enumerate() if t.name.startswith("aseda:work")]) == 3
    assert len(names) == 3
    assert not [t for t in threading.enumerate() if t.name.startswith("aseda:")]


async def test_send_to_named_stage() -> None:
    """to= feeds another source stage; an unknown name is an error."""
    a, seen_a = collector("a")
    b, seen_b = collector("b")
    async with aseda.Graph(a, b).run() as running:
        await running.send(1)
        await running.send(2, to="b")
        with pytest.raises(aseda.ConfigError, match="no stage"):
            await running.send(3, to="c")
    assert (seen_a, seen_b) == ([1], [2])


async def test_init_and_close_hooks() -> None:
    """Init hooks run before workers start, close hooks after they stop, in reverse order."""
    log: list[str] = []

    @aseda.stage
    async def first(x: int) -> int:
        log.append(f"first {x}")
        return x

    @first.on_init
    async def open_first() -> None:
        log.append("init first")

    @first.on_close
    def close_first() -> None:
        log.append("close first")

    second = aseda.stage(
        name="second",
        init=lambda: log.append("init second"),
        close=lambda: log.append("close second"),
    )(collector()[0].handler)
    async with aseda.Graph(first >> second).run() as running:
        await running.call(1)
    assert log == ["init first", "init second", "first 1", "close second", "close first"]


async def test_failed_init_closes_opened_stages() -> None:
    """If a stage's init fails, the stages opened before it are closed and nothing runs."""
    log: list[str] = []
    a = aseda.stage(
        name="a", init=lambda: log.append("init a"), close=lambda: log.append("close a")
    )(collector()[0].handler)

    def boom() -> None:
        raise OSError("no pool")

    b = aseda.stage(name="b", init=boom, close=lambda: log.append("close b"))(
        collector()[0].handler
    )
    with pytest.raises(OSError, match="no pool"):
        async with aseda.Graph(a >> b).run():
            pytest.fail("the body must not run")
    assert log == ["init a", "close a"]  # b never opened, so it is not closed


async def test_stats_conservation_mid_run() -> None:
    """admitted == processed + failed + queued + in flight at any snapshot."""
    gate = anyio.Event()

    @aseda.stage(capacity=100)
    async def wait(x: int) -> int:
        await gate.wait()
        if x % 3 == 0:
            raise ValueError(x)
        return x

    async with aseda.Graph(wait).run() as running:
        for i in range(10):
            running.send_nowait(i)
        await anyio.wait_all_tasks_blocked()
        s = running.stats()["wait"]
        assert (s.admitted, s.queue_length, s.in_flight) == (10, 9, 1)
        gate.set()
    s = running.stats()["wait"]
    assert s.admitted == s.processed + s.failed + s.queue_length + s.in_flight
    assert (s.processed, s.failed) == (6, 4)


async def test_stats_str_is_a_table() -> None:
    """print(stats) shows one row per stage."""
    sink, _ = collector()
    async with aseda.Graph(sink).run() as running:
        await running.call(1)
        text = str(running.stats())
    assert "sink" in text and "admitted" in text and "state: running" in text


async def test_call_shed_is_refused_at_once_when_full() -> None:
    """call(on_refuse="shed") raises Rejected at once on a full queue, like send_nowait."""
    gate = anyio.Event()

    @aseda.stage(capacity=1)
    async def held(x: int) -> int:
        await gate.wait()
        return x

    async with aseda.Graph(held).run() as running:
        running.send_nowait(0)
        await anyio.wait_all_tasks_blocked()
        running.send_nowait(1)
        with pytest.raises(aseda.Rejected):
            await running.call(2, on_refuse="shed")
        gate.set()
        await anyio.wait_all_tasks_blocked()  # the worker has emptied the queue
        assert await running.call(3, on_refuse="shed") == 3
    assert running.stats()["held"].rejected == 1
