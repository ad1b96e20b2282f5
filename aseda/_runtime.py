"""A running graph: the task group, the workers, forwarding, drain and cancellation.

The per-event path lives in :meth:`_StageRun._event_worker`: take from the queue's buffer,
await the handler, append to the next queue, count. It awaits nothing else unless it must
(a full queue downstream, an idle queue, a chunk boundary), so an event crosses a stage without
a scheduler round trip. Everything unusual (``call()`` envelopes, directives, fan-out, errors)
leaves that loop for a slower, general method.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from ._errors import Abandoned, ConfigError, Dropped, GraphClosed, Rejected, RoutingError
from ._log import RateLimit, logger
from ._offload import Job, OffloadThread
from ._outputs import DIRECTIVES, DROP, DeadLetter, Failure, Many, To
from ._queue import EventQueue, event_type
from ._stats import GraphStats, StageStats

if TYPE_CHECKING:
    from ._graph import Graph
    from ._stage import Stage

__all__ = ["CHUNK", "RunningGraph"]

#: Events a worker handles between checkpoints: large enough to amortise the round trip,
#: small enough that no task starves and cancellation stays prompt.
CHUNK = 64


_NO_VALUE: Any = object()


class _Reply:
    """The pending answer of one ``call()``; ``pending`` counts its live envelopes.

    The first final value answers the call at once. An error answers it only when every
    envelope has ended without a value, so fan-out gives the same answer whatever the order.
    """

    __slots__ = ("done", "error", "event", "pending", "value")

    def __init__(self, event: anyio.Event) -> None:
        self.event = event
        self.pending = 1
        self.done = False
        self.value: Any = _NO_VALUE
        self.error: BaseException | None = None

    def resolve(self, value: Any) -> None:
        if not self.done:
            self.done, self.value = True, value
            self.event.set()

    def fail(self, error: BaseException) -> None:
        """One envelope failed: remember the first error, then retire it."""
        if self.error is None:
            self.error = error
        self.pending -= 1
        self._settle(None)

    def retire(self, stage: str) -> None:
        """One envelope ended without a final value (dropped, or sent on)."""
        self.pending -= 1
        self._settle(stage)

    def _settle(self, stage: str | None) -> None:
        if self.pending == 0 and not self.done:
            self.done = True
            if self.error is None:
                self.error = Dropped(stage or "?")
            self.event.set()

    def abandon(self) -> None:
        if not self.done:
            self.done = True
            self.error = Abandoned("the graph stopped before this call's event was finished")
            self.event.set()


class _Call:
    """An event sent by ``call()``: carries its reply through the graph."""

    __slots__ = ("reply", "value")

    def __init__(self, value: Any, reply: _Reply) -> None:
        self.value = value
        self.reply = reply


class _StageRun:
    """One stage of a running graph."""

    def __init__(self, runtime: RunningGraph, stage: Stage) -> None:
        self.runtime = runtime
        self.stage = stage
        self.name = stage.name
        self.queue = EventQueue(stage.capacity, runtime.new_event)
        self.processed = 0
        self.failed = 0
        self.workers = 0  # live worker tasks
        self.target = stage.workers_initial
        self.retiring = 0
        self.serial = 0
        self.fail_log = RateLimit()
        self.reject_log = RateLimit()
        # Filled in by RunningGraph once every stage exists.
        self.nexts: tuple[tuple[EventQueue, bool], ...] = ()
        self.routes: dict[str, tuple[EventQueue, bool]] = {}
        self.dead: tuple[EventQueue, bool] | None = None

    # Workers ----------------------------------------------------------------------------------

    def spawn(self, tg: TaskGroup, count: int) -> None:
        if self.stage.blocking:
            worker = self._blocking_worker
        elif self.stage.batch:
            worker = self._batch_worker
        else:
            worker = self._event_worker
        for _ in range(count):
            self.serial += 1
            self.workers += 1
            # In the graph's start context, also for workers added later by set_workers.
            start = partial(
                tg.start_soon, worker, self.serial, name=f"aseda:{self.name}:{self.serial}"
            )
            self.runtime.context.run(start)

    def set_workers(self, tg: TaskGroup, count: int) -> None:
        low, high = self.stage.workers_min, self.stage.workers_max
        if isinstance(count, bool) or not isinstance(count, int) or not low <= count <= high:
            raise ConfigError(
                f"stage {self.name!r}: workers must be in [{low}, {high}], not {count!r}"
            )
        delta = count - self.target
        self.target = count
        if delta > 0:
            cancelled = min(delta, self.retiring)
            self.retiring -= cancelled
            self.spawn(tg, delta - cancelled)
        elif delta < 0:
            self.retiring -= delta
            self.queue.wake_all()

    def _should_exit(self) -> bool:
        """At a chunk boundary or when idle: retire a surplus worker, or stop after close."""
        if self.retiring:
            self.retiring -= 1
            return True
        return self.queue.closed and not self.queue.buffer

    async def _idle(self) -> None:
        runtime = self.runtime
        if runtime.draining:
            runtime.check_drained()
        await self.queue.wait_for_event()

    async def _event_worker(self, number: int) -> None:
        queue = self.queue
        buf, putters = queue.buffer, queue.putters
        popleft = buf.popleft
        handler = self.stage.handler
        terminal = not self.nexts
        fast = len(self.nexts) == 1 and not self.nexts[0][1]
        if fast:
            down = self.nexts[0][0]
            dbuf, dgetters, dcap = down.buffer, down.getters, down.capacity
        directives = DIRECTIVES
        try:
            while True:
                if not buf:
                    if self._should_exit():
                        return
                    await self._idle()
                    continue
                n = 0
                while buf and n < CHUNK:
                    item = popleft()
                    if putters:
                        queue.wake_putter()
                    n += 1
                    if type(item) is _Call:
                        await self._handle_call(item)
                        continue
                    try:
                        out = await handler(item)
                    except Exception as exc:
                        await self._fail(item, exc)
                        continue
                    if type(out) in directives or not (fast or terminal):
                        if not await self._emit_checked(item, out):
                            continue
                    elif fast:
                        if len(dbuf) < dcap:
                            dbuf.append(out)
                            down.admitted += 1
                            if dgetters:
                                dgetters.pop().set()
                        else:
                            await self._put(down, False, out)
                    self.processed += 1
                if n == CHUNK:
                    if self._should_exit():
                        return
                    await checkpoint()
        finally:
            self._worker_gone()

    async def _batch_worker(self, number: int) -> None:
        queue = self.queue
        buf = queue.buffer
        batch = self.stage.batch
        assert batch is not None
        handler = self.stage.handler
        try:
            while True:
                if not buf:
                    if self._should_exit():
                        return
                    await self._idle()
                    continue
                items = self._take(batch)
                values = [i.value if type(i) is _Call else i for i in items]
                try:
                    outs = await handler(values)
                except Exception as exc:
                    await self._fail_batch(items, exc)
                else:
                    await self._finish_batch(items, outs)
                if self._should_exit():
                    return
                await checkpoint()
        finally:
            self._worker_gone()

    async def _blocking_worker(self, number: int) -> None:
        queue = self.queue
        buf = queue.buffer
        stage = self.stage
        thread = OffloadThread(f"aseda:{self.name}:{number}", self.runtime.new_event)
        try:
            while True:
                if not buf:
                    if self._should_exit():
                        return
                    await self._idle()
                    continue
                if stage.batch:
                    items = self._take(stage.batch)
                else:
                    # A fair share of the queue, so one thread does not serialise what
                    # several could run side by side.
                    items = self._take(min(CHUNK, max(1, len(buf) // max(1, self.workers))))
                values = [i.value if type(i) is _Call else i for i in items]
                if stage.batch:
                    ok, result = await thread.run(self._thread_batch, values)
                    if ok:
                        await self._finish_batch(items, result)
                    else:
                        await self._fail_batch(items, result)
                else:
                    results = await thread.run(self._thread_each, values)
                    for item, (ok, result) in zip(items, results, strict=True):
                        if not ok:
                            await self._fail(item, result)
                        elif type(item) is _Call:
                            await self._finish_call(item, result)
                        elif await self._emit_checked(item, result):
                            self.processed += 1
                # No checkpoint here: waiting for the thread already was one.
                if self._should_exit():
                    return
        finally:
            thread.stop()
            self._worker_gone()

    def _thread_each(self, values: list[Any], job: Job) -> list[tuple[bool, Any]]:
        handler = self.stage.handler
        results: list[tuple[bool, Any]] = []
        for value in values:
            if job.abort:
                break
            try:
                results.append((True, handler(value)))
            except Exception as exc:
                results.append((False, exc))
        return results

    def _thread_batch(self, values: list[Any], job: Job) -> tuple[bool, Any]:
        try:
            return True, self.stage.handler(values)
        except Exception as exc:
            return False, exc

    def _take(self, most: int) -> list[Any]:
        buf, queue = self.queue.buffer, self.queue
        count = min(most, len(buf))
        items = [buf.popleft() for _ in range(count)]
        for _ in range(min(count, len(queue.putters))):
            queue.wake_putter()
        return items

    def _worker_gone(self) -> None:
        self.workers -= 1
        runtime = self.runtime
        if runtime.draining:
            runtime.check_drained()

    # Forwarding -------------------------------------------------------------------------------

    async def _put(self, queue: EventQueue, back: bool, value: Any) -> None:
        """Put into a downstream queue, waiting for room (backpressure) unless it is a cycle's
        back edge, which never blocks: the event is already inside the graph."""
        if back:
            queue.put_overflow(value)
            return
        while not queue.put_nowait(value):
            if queue.closed:  # pragma: no cover - queues close only after the graph drained
                raise RuntimeError("aseda: a stage queue closed while events were in flight")
            await queue.wait_for_room()

    def _targets(self, out: Any) -> list[tuple[EventQueue | None, bool, Any]]:
        """Where each output goes: (queue, back, value); queue None is a final value.

        Raises RoutingError before anything is sent, so a bad route fails the whole event.
        """
        kind = type(out)
        if kind is To:
            try:
                queue, back = self.routes[out.stage]
            except KeyError:
                raise RoutingError(
                    f"stage {self.name!r} routed to {out.stage!r}, which is not one of its "
                    f"successors or declared routes {sorted(self.routes)}"
                ) from None
            return [(queue, back, out.value)]
        if kind is Many:
            return [t for value in out.values for t in self._targets(value)]
        if out is DROP:
            return []
        if not self.nexts:
            return [(None, False, out)]
        return [(queue, back, out) for queue, back in self.nexts]

    async def _emit_checked(self, item: Any, out: Any) -> bool:
        """Send a plain event's outputs on; on a routing error fail the event instead."""
        try:
            targets = self._targets(out)
        except RoutingError as exc:
            await self._fail(item, exc)
            return False
        for queue, back, value in targets:
            if queue is not None:
                await self._put(queue, back, value)
        return True

    async def _handle_call(self, env: _Call) -> None:
        try:
            out = await self.stage.handler(env.value)
        except Exception as exc:
            await self._fail(env, exc)
            return
        await self._finish_call(env, out)

    async def _finish_call(self, env: _Call, out: Any) -> None:
        reply = env.reply
        if type(out) not in DIRECTIVES:
            # The common cases without building target lists: a final value, or one successor
            # that gets the same envelope back (pending is unchanged: one in, one out).
            nexts = self.nexts
            if not nexts:
                reply.resolve(out)
                reply.retire(self.name)
                self.processed += 1
                return
            if len(nexts) == 1:
                queue, back = nexts[0]
                env.value = out
                if back or not queue.put_nowait(env):
                    await self._put(queue, back, env)
                self.processed += 1
                return
        try:
            targets = self._targets(out)
        except RoutingError as exc:
            await self._fail(env, exc)
            return
        sends = []
        for target, back, value in targets:
            if target is None:
                reply.resolve(value)
            else:
                sends.append((target, back, value))
        reply.pending += len(sends)
        for i, (target, back, value) in enumerate(sends):
            if i == 0:  # the envelope in hand carries the first output on
                env.value = value
                await self._put(target, back, env)
            else:
                await self._put(target, back, _Call(value, reply))
        reply.retire(self.name)
        self.processed += 1

    async def _finish_batch(self, items: list[Any], outs: Any) -> None:
        if outs is None:
            outs = [DROP] * len(items) if self.nexts else [None] * len(items)
        elif (
            not isinstance(outs, Sequence)
            or isinstance(outs, (str, bytes))
            or len(outs) != len(items)
        ):
            error = TypeError(
                f"batch handler of stage {self.name!r} must return None or a sequence with one "
                f"output per event ({len(items)}), not {type(outs).__name__}"
                + (f" of length {len(outs)}" if isinstance(outs, Sequence) else "")
            )
            await self._fail_batch(items, error)
            return
        for item, out in zip(items, outs, strict=True):
            if type(item) is _Call:
                await self._finish_call(item, out)
            elif await self._emit_checked(item, out):
                self.processed += 1

    # Failures ---------------------------------------------------------------------------------

    async def _fail_batch(self, items: list[Any], error: BaseException) -> None:
        for item in items:
            await self._fail(item, error)

    async def _fail(self, item: Any, error: BaseException) -> None:
        """Count a failed event, tell its caller, and apply the stage's on_error policy."""
        self.failed += 1
        policy = self.stage.on_error
        if type(item) is _Call:
            item.reply.fail(error)
            value = item.value
        else:
            value = item
        if policy == "fail":
            logger.error("stage failed the graph", stage=self.name, error=repr(error))
            raise error
        held = self.fail_log.allow()
        if isinstance(policy, DeadLetter):
            if held is not None:
                logger.warning(
                    "handler failed; sent to dead letter",
                    stage=self.name,
                    dead_letter=policy.stage,
                    error=repr(error),
                    suppressed=held,
                )
            assert self.dead is not None
            queue, back = self.dead
            await self._put(queue, back, Failure(self.name, value, error))
        elif held is not None:
            logger.error(
                "handler failed; event dropped",
                stage=self.name,
                error=repr(error),
                suppressed=held,
                exc_info=error,
            )

    # Introspection ----------------------------------------------------------------------------

    def stats(self) -> StageStats:
        queue, stage = self.queue, self.stage
        length = len(queue.buffer)
        return StageStats(
            name=self.name,
            queue_length=length,
            capacity=queue.capacity,
            workers=self.workers,
            workers_min=stage.workers_min,
            workers_max=stage.workers_max,
            batch=stage.batch,
            blocking=stage.blocking,
            admitted=queue.admitted,
            rejected=queue.rejected,
            processed=self.processed,
            failed=self.failed,
            in_flight=queue.admitted - self.processed - self.failed - length,
            senders_waiting=len(queue.putters),
        )

    def unfinished(self) -> int:
        return self.queue.admitted - self.processed - self.failed


class RunningGraph:
    """The handle of a running graph, given by ``async with graph.run() as running``.

    Feed it with :meth:`send`, :meth:`send_nowait` or :meth:`call`; read :meth:`stats`;
    resize a pool with :meth:`set_workers`. Its methods run on the event loop's thread.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.new_event = event_type()
        self._stages = {s.name: _StageRun(self, s) for s in graph.stages}
        for edge in graph.edges:
            source, target = self._stages[edge.source], self._stages[edge.target]
            link = (target.queue, edge.back)
            if edge.kind == "next":
                source.nexts += (link,)
                source.routes[edge.target] = link
            elif edge.kind == "route":
                source.routes[edge.target] = link
            else:
                source.dead = link
        self._entry = self._stages[graph.entry]
        self.accepting = False
        self.draining = False
        self._state = "starting"
        self._drained: anyio.Event | None = None
        self._replies: set[_Reply] = set()
        self._tg: TaskGroup | None = None
        self.context = contextvars.copy_context()
        self._sends = 0
        #: admitted events abandoned by a cancelled or failed run
        self.abandoned = 0

    @classmethod
    @asynccontextmanager
    async def _start(cls, graph: Graph) -> AsyncIterator[RunningGraph]:
        self = cls(graph)
        opened: list[_StageRun] = []
        body_error: Exception | None = None
        clean = False
        try:
            for run in self._stages.values():
                for hook in run.stage.init_hooks:
                    result = hook()
                    if isawaitable(result):
                        await result
                opened.append(run)  # its close hooks run only if all its init hooks did
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for run in self._stages.values():
                    run.spawn(tg, run.target)
                    logger.debug("stage started", stage=run.name, workers=run.target)
                self.accepting = True
                self._state = "running"
                try:
                    yield self
                    await self._drain()
                except Exception as exc:
                    # The block's own error leaves as itself, not wrapped in a group.
                    body_error = exc
                    self._abandon(tg)
                except BaseException:
                    self._abandon(tg)
                    raise
            if self._state != "cancelled":
                self._state = "stopped"
            if body_error is not None:
                raise body_error
            clean = True
        finally:
            self.accepting = False
            with anyio.CancelScope(shield=True):
                await self._close(opened, raise_errors=clean)

    async def _close(self, opened: list[_StageRun], raise_errors: bool) -> None:
        """Run close hooks in reverse order; all of them, whatever fails.

        A close hook's error is raised only when nothing else is already leaving the run,
        so it never hides the error that stopped the graph (it is logged either way).
        """
        errors: list[BaseException] = []
        for run in reversed(opened):
            for hook in run.stage.close_hooks:
                try:
                    result = hook()
                    if isawaitable(result):
                        await result
                except Exception as exc:
                    logger.error("stage close hook failed", stage=run.name, error=repr(exc))
                    errors.append(exc)
            logger.debug(
                "stage stopped", stage=run.name, processed=run.processed, failed=run.failed
            )
        if errors and raise_errors:
            raise errors[0]

    async def _drain(self) -> None:
        self.accepting = False
        self.draining = True
        self._state = "draining"
        for run in self._stages.values():
            run.queue.wake_all()  # senders waiting for room learn the graph is closed
        if not self._all_finished():
            self._drained = anyio.Event()
            await self._drained.wait()
        for run in self._stages.values():
            run.queue.close()

    def _all_finished(self) -> bool:
        return all(run.unfinished() == 0 for run in self._stages.values())

    def check_drained(self) -> None:
        """Called by workers going idle while draining: wake the drain when all is done."""
        if self._drained is not None and self._all_finished():
            self._drained.set()

    def _abandon(self, tg: TaskGroup) -> None:
        self.accepting = False
        self._state = "cancelled"
        tg.cancel_scope.cancel()
        self.abandoned = sum(run.unfinished() for run in self._stages.values())
        for reply in self._replies:
            reply.abandon()
        for run in self._stages.values():
            run.queue.wake_all()  # senders waiting for room learn the graph is closed
        if self.abandoned:
            logger.warning("graph cancelled; admitted events abandoned", abandoned=self.abandoned)

    # Feeding ----------------------------------------------------------------------------------

    def _target(self, to: str | None) -> _StageRun:
        if to is None:
            return self._entry
        try:
            return self._stages[to]
        except KeyError:
            raise ConfigError(f"no stage named {to!r} in this graph") from None

    def _refuse(self, run: _StageRun) -> Rejected:
        queue = run.queue
        queue.rejected += 1
        held = run.reject_log.allow()
        if held is not None:
            logger.info(
                "event rejected",
                stage=run.name,
                reason="queue full",
                queue_length=len(queue.buffer),
                suppressed=held,
            )
        return Rejected(run.name, "queue full", len(queue.buffer))

    async def _admit(self, run: _StageRun, item: Any) -> None:
        queue = run.queue
        self._sends += 1
        if not self.accepting:
            raise GraphClosed("the graph is not accepting events (it is draining or stopped)")
        if queue.put_nowait(item):
            if self._sends % CHUNK == 0:
                await checkpoint()  # a sender that never waits must still yield now and then
            return
        while True:
            await queue.wait_for_room()
            if not self.accepting:
                raise GraphClosed("the graph stopped accepting events while this send waited")
            if queue.put_nowait(item):
                return

    async def send(self, event: Any, *, to: str | None = None) -> None:
        """Admit ``event`` to the entry stage (or the stage named ``to``).

        Waits while the queue is full (backpressure). Checkpoints only now and then when it
        does not wait, so a fast producer pays no scheduler round trip per event.

        Raises:
            GraphClosed: the graph is draining or stopped.
            ConfigError: no stage is named ``to``.
        """
        await self._admit(self._target(to), event)

    def send_nowait(self, event: Any, *, to: str | None = None) -> None:
        """Admit ``event`` now or refuse it.

        Raises:
            Rejected: the stage's queue is full (counted in ``rejected``).
            GraphClosed: the graph is draining or stopped.
            ConfigError: no stage is named ``to``.
        """
        run = self._target(to)
        if not self.accepting:
            raise GraphClosed("the graph is not accepting events (it is draining or stopped)")
        if not run.queue.put_nowait(event):
            raise self._refuse(run)

    async def call(self, event: Any, *, to: str | None = None, wait: bool = True) -> Any:
        """Send ``event`` and wait for the final value its path produces.

        The final value is what the last stage on the path (one with no successors) returns.
        With fan-out or ``Many``, the first final value wins; the rest still run.

        Args:
            event: the event.
            to: the stage to feed, if not the entry stage.
            wait: wait for room if the queue is full (the default); with ``False`` a full
                queue refuses the call at once, as ``send_nowait`` does.

        Raises:
            Exception: whatever a handler on the path raised, as itself.
            Rejected: ``wait=False`` and the queue was full.
            Dropped: every path of the event was filtered out.
            Abandoned: the graph was cancelled first.
            GraphClosed: the graph is draining or stopped.
        """
        reply = _Reply(self.new_event())
        self._replies.add(reply)
        try:
            if wait:
                await self._admit(self._target(to), _Call(event, reply))
            else:
                self.send_nowait(_Call(event, reply), to=to)
            await reply.event.wait()
        finally:
            self._replies.discard(reply)
        if reply.value is _NO_VALUE:
            assert reply.error is not None
            raise reply.error
        return reply.value

    # Control and introspection ---------------------------------------------------------------

    def set_workers(self, stage: str, workers: int) -> None:
        """Resize a stage's worker pool (its threads too, for a blocking stage).

        Growing starts workers at once; shrinking retires surplus workers at their next chunk
        boundary, never mid-event.

        Raises:
            ConfigError: no such stage, or ``workers`` outside the stage's [min, max].
            GraphClosed: the graph is not running (not started yet, or stopped).
        """
        if self._tg is None or self._state not in ("running", "draining"):
            raise GraphClosed("the graph is not running")
        self._target(stage).set_workers(self._tg, workers)

    def stats(self) -> GraphStats:
        """Return an immutable snapshot of every stage."""
        return GraphStats(
            stages=tuple(run.stats() for run in self._stages.values()),
            state=self._state,
            abandoned=self.abandoned,
        )

    @property
    def state(self) -> str:
        """``"running"``, ``"draining"``, ``"stopped"`` or ``"cancelled"``."""
        return self._state
