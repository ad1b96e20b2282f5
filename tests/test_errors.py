"""Errors never vanish: policies, call() delivery, graph failure, cancellation."""

from __future__ import annotations

import sys
import threading

import anyio
import pytest
from structlog.testing import capture_logs

import aseda

pytestmark = pytest.mark.anyio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup


async def fragile(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def test_hierarchy() -> None:
    """Every aseda error derives from AsedaError and the closest built-in."""
    for cls in (
        aseda.ConfigError,
        aseda.GraphError,
        aseda.Rejected,
        aseda.GraphClosed,
        aseda.Dropped,
        aseda.Abandoned,
        aseda.RoutingError,
    ):
        assert issubclass(cls, aseda.AsedaError), cls
        assert cls.__doc__ and "raised" in cls.__doc__.lower(), cls
    assert issubclass(aseda.ConfigError, ValueError)
    assert issubclass(aseda.RoutingError, LookupError)


def test_rejected_pickles() -> None:
    """Rejected keeps its fields across pickling (it may cross process boundaries)."""
    import pickle

    err = pickle.loads(pickle.dumps(aseda.Rejected("parse", "queue full", 3)))
    assert (err.stage, err.reason, err.queue_length) == ("parse", "queue full", 3)


async def test_log_policy_counts_logs_and_tells_caller() -> None:
    """on_error='log': the stage keeps going, failures are counted, logged, and raised to call()."""
    sink_seen: list[int] = []

    async def sink(x: int) -> None:
        sink_seen.append(x)

    graph = aseda.Graph(aseda.stage(fragile) >> aseda.stage(sink))
    with capture_logs() as logs:
        async with graph.run() as running:
            for i in range(10):
                await running.send(i)
            with pytest.raises(ValueError, match="odd 11"):
                await running.call(11)
            assert await running.call(12) is None
    assert sink_seen == [0, 2, 4, 6, 8, 12]
    stats = running.stats()["fragile"]
    assert (stats.processed, stats.failed) == (6, 6)
    failures = [e for e in logs if e["event"] == "handler failed; event dropped"]
    # rate-limited: the first failure is logged, the burst after it is held back
    assert len(failures) == 1 and failures[0]["stage"] == "fragile"


async def test_dead_letter_gets_one_failure_per_event() -> None:
    """on_error=DeadLetter: each failed event reaches the dead-letter stage as a Failure."""
    dead: list[aseda.Failure] = []

    async def errors(f: aseda.Failure) -> None:
        dead.append(f)

    @aseda.stage(batch=4, on_error=aseda.DeadLetter("errors"))
    async def batched(xs: list[int]) -> list[int]:
        if 3 in xs:
            raise KeyError(3)
        return xs

    graph = aseda.Graph(
        aseda.stage(on_error=aseda.DeadLetter("errors"))(fragile) >> batched, aseda.stage(errors)
    )
    async with graph.run() as running:
        for i in range(6):
            await running.send(i)
        with pytest.raises(ValueError, match="odd 7"):
            await running.call(7)
    by_stage = sorted((f.stage, f.event, type(f.error).__name__) for f in dead)
    assert [f for f in by_stage if f[0] == "fragile"] == [
        ("fragile", 1, "ValueError"),
        ("fragile", 3, "ValueError"),
        ("fragile", 5, "ValueError"),
        ("fragile", 7, "ValueError"),
    ]
    stats = running.stats()
    assert (
        stats["errors"].processed == len(dead) == stats["fragile"].failed + stats["batched"].failed
    )


async def test_fail_policy_fails_the_graph_as_exception_group() -> None:
    """on_error='fail': the handler's exception leaves the run inside an ExceptionGroup."""
    gate = anyio.Event()

    @aseda.stage(capacity=100)
    async def slow(x: int) -> int:
        await gate.wait()
        return x

    graph = aseda.Graph(aseda.stage(on_error="fail", capacity=100)(fragile) >> slow)
    with pytest.raises(ExceptionGroup) as info:
        async with graph.run() as running:
            for i in range(10):
                await running.send(i)
            await anyio.sleep_forever()
    assert info.group_contains(ValueError, match="odd 1")
    assert running.state == "cancelled"
    # 0 reached slow and waits; 2..9 were still queued in fragile
    assert running.abandoned == 9


async def test_fail_policy_during_drain() -> None:
    """A failure while draining also fails the run."""
    graph = aseda.Graph(aseda.stage(on_error="fail")(fragile))
    with pytest.raises(ExceptionGroup) as info:
        async with graph.run() as running:
            running.send_nowait(0)
            running.send_nowait(1)
    assert info.group_contains(ValueError)


async def test_handler_exception_reaches_call_as_itself() -> None:
    """call() raises the handler's own exception object, not a wrapper."""
    boom = RuntimeError("boom")

    @aseda.stage
    async def explode(x: int) -> int:
        raise boom

    async with aseda.Graph(explode).run() as running:
        with pytest.raises(RuntimeError) as info:
            await running.call(1)
    assert info.value is boom


async def test_blocking_handler_exception_reaches_call() -> None:
    """Exceptions raised on a thread reach call() too."""

    @aseda.stage
    def explode(x: int) -> int:
        raise ZeroDivisionError(x)

    async with aseda.Graph(explode).run() as running:
        with pytest.raises(ZeroDivisionError):
            await running.call(1)
    assert running.stats()["explode"].failed == 1


async def test_cancelling_host_scope_stops_workers_and_threads() -> None:
    """Cancelling mid-stream stops every worker and thread and reports what it abandoned."""
    started = threading.Event()
    release = threading.Event()

    @aseda.stage(capacity=100)
    def stuck(x: int) -> int:
        started.set()
        release.wait(10)  # the handler running when the cancel comes is let finish
        return x

    async def hold(x: int) -> int:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    graph = aseda.Graph(stuck >> aseda.stage(hold))
    with anyio.CancelScope() as scope:
        async with graph.run() as running:
            for i in range(20):
                await running.send(i)
            await anyio.to_thread.run_sync(started.wait)
            scope.cancel()
            release.set()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert running.abandoned == 20
    assert running.stats().state == "cancelled"
    assert running.stats()["stuck"].workers == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("aseda:")]


async def test_pending_calls_get_abandoned() -> None:
    """call() in another task gets Abandoned when the graph is cancelled."""

    @aseda.stage
    async def never(x: int) -> int:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    outcome: list[BaseException] = []

    async def caller(running: aseda.RunningGraph) -> None:
        try:
            await running.call(1)
        except aseda.Abandoned as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as outer:
        with anyio.CancelScope() as scope:
            async with aseda.Graph(never).run() as running:
                outer.start_soon(caller, running)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
                await anyio.sleep_forever()
    assert len(outcome) == 1 and running.abandoned == 1


async def test_body_exception_cancels_and_propagates_as_itself() -> None:
    """An exception in the block cancels the graph and leaves as itself, not in a group."""
    gate = anyio.Event()

    @aseda.stage
    async def held(x: int) -> int:
        await gate.wait()
        return x

    with pytest.raises(LookupError, match="user bug"):
        async with aseda.Graph(held).run() as running:
            running.send_nowait(1)
            running.send_nowait(2)
            await anyio.wait_all_tasks_blocked()
            raise LookupError("user bug")
    assert (running.state, running.abandoned) == ("cancelled", 2)


async def test_call_error_in_block_is_not_wrapped() -> None:
    """A handler error re-raised by call() can be caught outside the block as itself."""
    with pytest.raises(ValueError, match="odd 1"):
        async with aseda.Graph(aseda.stage(fragile)).run() as running:
            await running.call(1)


async def test_sender_waiting_for_room_is_released_on_cancel() -> None:
    """A send() blocked on a full queue in another task gets GraphClosed when the run stops."""
    gate = anyio.Event()

    @aseda.stage(capacity=1)
    async def held(x: int) -> int:
        await gate.wait()
        return x

    outcome: list[BaseException] = []

    async def sender(running: aseda.RunningGraph) -> None:
        try:
            await running.send(3)
        except aseda.GraphClosed as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as outer:
        with anyio.CancelScope() as scope:
            async with aseda.Graph(held).run() as running:
                running.send_nowait(1)
                await anyio.wait_all_tasks_blocked()
                running.send_nowait(2)
                outer.start_soon(sender, running)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
                await anyio.sleep_forever()
    assert len(outcome) == 1


async def test_fan_out_call_prefers_a_value_over_an_error() -> None:
    """With fan-out, call() returns a branch's value even if another branch failed first."""

    @aseda.stage
    async def source(x: int) -> int:
        return x

    @aseda.stage
    async def broken(x: int) -> int:
        raise ValueError(x)

    @aseda.stage
    async def slow(x: int) -> int:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        return x + 1

    async with aseda.Graph(source >> [broken, slow]).run() as running:
        assert await running.call(1) == 2
    async with aseda.Graph(source >> [broken, aseda.stage(name="b2")(broken.handler)]).run() as r:
        with pytest.raises(ValueError, match="1"):
            await r.call(1)  # no branch has a value: the first error answers


async def test_close_hook_failure_is_raised_after_all_hooks_ran() -> None:
    """A failing close hook does not skip the others; its error is raised."""
    closed: list[str] = []

    def bad() -> None:
        raise OSError("close failed")

    a = aseda.stage(name="a", close=lambda: closed.append("a"))(fragile)
    b = aseda.stage(name="b", close=bad)(fragile)
    with pytest.raises(OSError, match="close failed"):
        async with aseda.Graph(a >> b).run():
            pass
    assert closed == ["a"]


async def test_rejections_are_logged_rate_limited() -> None:
    """A burst of refusals logs one line, not one per event."""
    gate = anyio.Event()

    @aseda.stage(capacity=1)
    async def held(x: int) -> int:
        await gate.wait()
        return x

    with capture_logs() as logs:
        async with aseda.Graph(held).run() as running:
            running.send_nowait(0)
            await anyio.wait_all_tasks_blocked()
            running.send_nowait(1)
            for i in range(50):
                with pytest.raises(aseda.Rejected):
                    running.send_nowait(i)
            gate.set()
    assert running.stats()["held"].rejected == 50
    assert len([e for e in logs if e["event"] == "event refused"]) == 1


def test_default_logging_goes_to_stderr_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    """Before the application configures structlog, aseda logs INFO+ to stderr only."""
    import structlog

    from aseda._log import logger

    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        logger.debug("hidden debug line")
        logger.info("shown info line", stage="x")
    finally:
        structlog.configure(**saved)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "shown info line" in captured.err and "hidden debug line" not in captured.err
