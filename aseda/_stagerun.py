"""One stage of a running graph: admission at its queue, its workers, forwarding, failures.

The per-event path lives in :meth:`StageRun._event_worker`: take from the queue's buffer,
await the handler, append to the next queue, count. It awaits nothing else unless it must
(a full or conditioned queue downstream, an idle queue, a chunk boundary), so an event crosses
a stage without a scheduler round trip. Everything unusual (``call()`` envelopes, directives,
fan-out, admission policies, refusals, errors) leaves that loop for slower, general methods.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from inspect import isawaitable
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from ._admission import (
    AdmissionPolicy,
    Credits,
    PerClass,
    Refusal,
    Threshold,
    TokenBucket,
    normalize,
)
from ._control import Action, Observation
from ._errors import ConfigError, GraphClosed, Rejected, RoutingError
from ._histogram import LatencyHistogram, LatencySummary
from ._log import RateLimit, logger
from ._offload import Job, OffloadThread
from ._outputs import DIRECTIVES, DROP, DeadLetter, Failure, Many, To
from ._queue import EventQueue
from ._refusals import Degrade, OnRefuse, Redirect
from ._reply import Call
from ._stats import StageStats

#: Latency samples are kept in plain lists (an append is cheap) and folded into histograms
#: when a snapshot is taken or this many have piled up.
_FOLD = 4096

#: Seconds per window of the recent response-time histogram.
_WINDOW = 1.0

#: A blocking handler call cheaper than this (seconds) is worth chunking with others.
_CHEAP = 100e-6

if TYPE_CHECKING:
    from ._runtime import RunningGraph
    from ._stage import Stage

__all__ = ["CHUNK", "LOSSY", "RAISE", "INTERNAL", "StageRun"]

#: Events a worker handles between checkpoints: large enough to amortise the round trip,
#: small enough that no task starves and cancellation stays prompt.
CHUNK = 64

#: Who offers an event, which decides what a "shed" refusal does: an upstream worker
#: (the event is dropped and counted), a sender that gets Rejected, or a lossy sender.
INTERNAL: Final = 0
RAISE: Final = 1
LOSSY: Final = 2


_FULL = Refusal("queue full")
_POLICY_ERROR = Refusal("policy error")
_SKIP: Any = object()

Link = tuple["StageRun", bool]


def _answer_calls(items: list[Any]) -> Any:
    """An on_done for a thread job of a last stage: resolve its call()s' replies at once."""
    calls = [(i, item.reply) for i, item in enumerate(items) if type(item) is Call]
    if not calls:
        return None

    def answer(job: Job) -> None:
        results = job.result
        for i, reply in calls:
            if i < len(results):
                ok, value = results[i]
                if ok and type(value) not in DIRECTIVES:
                    reply.resolve(value)

    return answer


class _WithRate(AdmissionPolicy):
    """A stage's own admission policy and the token bucket a rate controller installed."""

    __slots__ = ("bucket", "policy")

    def __init__(self, policy: Any, bucket: TokenBucket) -> None:
        self.policy = policy
        self.bucket = bucket

    def __call__(self, event: Any, stage: Any) -> Refusal | None:
        # The stage's own policy first: a refusal there spends no token.
        return normalize(self.policy(event, stage)) or self.bucket(event, stage)

    def admit_many(self, events: Sequence[Any], stage: Any) -> Refusal | None:
        own = self.policy
        if isinstance(own, AdmissionPolicy):
            refusal = own.admit_many(events, stage)
        else:
            refusal = AdmissionPolicy.admit_many(self, events, stage)  # per event, then:
            if refusal is None:
                return None  # each event already passed both (the per-event check above)
        return refusal or self.bucket.admit_many(events, stage)

    def __repr__(self) -> str:
        return f"{self.policy!r} + {self.bucket!r}"


def _burst(rate: float) -> float:
    """The burst of a token bucket installed for a rate controller: 0.1 s at that rate."""
    return max(1.0, rate / 10)


def _as_async(fn: Any) -> Any:
    """An async callable for a handler that may be sync (a Degrade handler)."""
    import inspect

    if inspect.iscoroutinefunction(fn):
        return fn

    async def call(value: Any) -> Any:
        result = fn(value)
        return await result if isawaitable(result) else result

    return call


def _drop_own_frame(exc: BaseException) -> None:
    """Start the traceback at the handler: the catching frame is aseda's, and it holds the
    envelope whose reply will hold ``exc`` (a reference cycle the collector must find)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_next is not None:
        exc.__traceback__ = tb.tb_next


class StageRun:
    """One stage of a running graph. It is also the live :class:`aseda.StageView` that
    admission policies read."""

    def __init__(self, runtime: RunningGraph, stage: Stage) -> None:
        self.runtime = runtime
        self.stage = stage
        self.name = stage.name
        self.queue = EventQueue(stage.capacity, runtime.new_event)
        self.processed = 0
        self.failed = 0
        self.shed = 0
        self.degraded = 0
        self.redirected = 0
        self.dropped = 0  # shed after admission (drop-oldest, deadline)
        self.reasons: dict[str, int] = {}
        self.workers = 0  # live worker tasks
        # The batch size in force: the declared one until a batching controller changes it.
        self.batch = stage.batch
        # Events a blocking per-event worker hands its thread at once (adapts to their cost).
        self.chunk = 1
        # The handler in force: the stage's, or its degraded one while a controller says so.
        self.handler: Any = stage.handler
        self.degrading = False
        # Feedback control (set up by RunningGraph): controllers, recent samples, last counts.
        self.controllers: list[Any] = []
        self.auto_bucket: TokenBucket | None = None
        self.control_enabled = True
        self.last_decision: str | None = None
        self.recent_response: list[float] = []
        self.recent_service: list[float] = []
        self.recent_by_class: dict[Any, list[float]] = {}
        self._obs: tuple[float, int, int, int] | None = None
        self._class_totals: tuple[PerClass, dict[Any, int], dict[Any, int]] | None = None
        self.target = stage.workers_initial
        self.retiring = 0
        self.serial = 0
        self.fail_log = RateLimit()
        self.refuse_log = RateLimit()
        self.policy_log = RateLimit()
        # Load conditioning; the policy may be swapped while running.
        self.policy = stage.admission
        self.on_refuse: OnRefuse = stage.on_refuse
        self.lifo = stage.order
        self.deadline = stage.deadline
        if self.deadline is not None:
            self.queue.times = deque()
        # A plain stage admits with a length check alone (the per-event fast path);
        # a special one takes events through _take_one (LIFO, deadline).
        self.plain = True
        self.special = self.lifo is not None or self.deadline is not None
        self.update_plain()
        # Latency of sampled events (and every call()): queue wait, service, since entry.
        self.timed = runtime.statistics
        # The event loop's clock (trio's MockClock included), as the runtime's other timing.
        self.clock = runtime.clock
        self.histograms = (LatencyHistogram(), LatencyHistogram(), LatencyHistogram())
        # Response times of the last one to two seconds: this window and the one before.
        self.recent = (LatencyHistogram(), LatencyHistogram())
        self._window_end = time.monotonic() + _WINDOW
        self.pending: tuple[list[float], list[float], list[float]] = ([], [], [])
        self.throughput = 0.0
        self._rate_at = time.monotonic()
        self._rate_done = 0
        # Filled in by RunningGraph once every stage exists.
        self.nexts: tuple[Link, ...] = ()
        self.routes: dict[str, Link] = {}
        self.dead: Link | None = None

    def update_plain(self) -> None:
        self.plain = (
            self.policy is None
            and self.deadline is None
            and self.stage.overflow == "refuse"
            and self.queue.reserved == 0
        )

    # The live view read by admission policies ---------------------------------------------

    @property
    def queue_length(self) -> int:
        """Events waiting in the queue now."""
        return len(self.queue.buffer)

    @property
    def capacity(self) -> float:
        """The most events the queue holds."""
        return self.queue.capacity

    @property
    def in_flight(self) -> int:
        """Events taken from the queue and not finished yet."""
        return self.unfinished() - len(self.queue.buffer)

    def unfinished(self) -> int:
        return self.queue.admitted - self.processed - self.failed - self.dropped

    # Admission ------------------------------------------------------------------------------

    def admit_now(self, item: Any) -> Refusal | None:
        """Admit ``item`` if the queue and its policy take it now; else return why not."""
        queue = self.queue
        buf = queue.buffer
        full = len(buf) + queue.reserved >= queue.capacity
        if full and (self.stage.overflow == "refuse" or not buf):
            return _FULL
        policy = self.policy
        if policy is not None:
            refusal = self._ask(policy, item)
            if refusal is not None:
                return refusal
        if full:  # overflow="drop_oldest": make room by shedding the oldest queued event
            self._drop_queued(self._pop_oldest(), "dropped oldest")
        self.append(item)
        return None

    def _ask(self, policy: Any, item: Any) -> Refusal | None:
        value = item.value if type(item) is Call else item
        try:
            return normalize(policy(value, self))
        except Exception as exc:  # a broken policy refuses; it never crashes the sender
            self.log_error("admission policy failed; event refused", exc)
            return _POLICY_ERROR

    def log_error(self, message: str, exc: BaseException) -> None:
        """Log a policy or degrade handler failure, at most once a second for this stage."""
        held = self.policy_log.allow()
        if held is not None:
            logger.error(message, stage=self.name, error=repr(exc), suppressed=held, exc_info=exc)

    def append(self, item: Any) -> None:
        """Put ``item`` in the queue with no checks (admitted, or a cycle's back edge)."""
        queue = self.queue
        queue.buffer.append(item)
        if type(item) is Call:
            item.t_queued = self.clock()
        if queue.times is not None:
            assert self.deadline is not None
            queue.times.append(self.deadline.clock())
        queue.admitted += 1
        if queue.getters:
            queue.getters.pop().set()

    def _pop_oldest(self) -> Any:
        queue = self.queue
        if queue.times is not None:
            queue.times.popleft()
        return queue.buffer.popleft()

    async def offer(
        self,
        item: Any,
        mode: OnRefuse,
        sender: int,
        refusal: Refusal | None = None,
    ) -> bool:
        """Offer ``item`` to this stage; on refusal do what ``mode`` says.

        Returns True if the event was admitted, degraded or redirected; False if it was shed
        (for a lossy sender). Raises Rejected for a sender that asked for it, and
        GraphClosed for an outside sender when the graph stops accepting while it waits.
        """
        while True:
            if refusal is None:  # else the caller already asked and was refused
                refusal = self.admit_now(item)
                if refusal is None:
                    return True
            if mode != "wait":
                return await self._refused(item, refusal, mode, sender)
            queue = self.queue
            if refusal.retry_after is not None:
                with anyio.move_on_after(refusal.retry_after):
                    await queue.wait_for_room()
            else:
                await queue.wait_for_room()
            refusal = None
            if sender != INTERNAL and not self.runtime.accepting:
                raise GraphClosed("the graph stopped accepting events while this send waited")

    def count_refusal(self, reason: str, events: int = 1) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + events
        if self.runtime.instruments.hooks["refused"]:
            for _ in range(events):  # once per event, as the statistics count
                self.runtime.instruments.call("refused", self.name, reason)
        held = self.refuse_log.allow()
        if held is not None:
            logger.info(
                "event refused",
                stage=self.name,
                reason=reason,
                queue_length=len(self.queue.buffer),
                suppressed=held,
            )

    def rejected_error(self, reason: str) -> Rejected:
        return Rejected(self.name, reason, len(self.queue.buffer))

    async def _refused(self, item: Any, refusal: Refusal, mode: OnRefuse, sender: int) -> bool:
        reason = refusal.reason
        if isinstance(mode, Redirect):
            # Graph checks guarantee a redirect never leads back here, so this ends.
            self.count_refusal(reason)
            self.redirected += 1
            target = self.runtime.stage_run(mode.stage)
            return await target.offer(item, target.on_refuse, sender)
        if isinstance(mode, Degrade):
            value = item.value if type(item) is Call else item
            try:
                out = mode.handler(value)
                if isawaitable(out):
                    out = await out
                targets = self._targets(out)
            except Exception as exc:
                self.count_refusal("degrade failed")
                self.log_error("degrade handler failed", exc)
                if sender == INTERNAL:
                    self.shed += 1
                    if type(item) is Call:
                        item.reply.fail(exc)
                    return False
                self.queue.rejected += 1  # the sender is told, as for "shed"
                if sender == LOSSY:
                    return False
                raise self.rejected_error("degrade failed") from exc
            self.count_refusal(reason)
            self.degraded += 1
            await self._send_on(item, targets)
            return True
        self.count_refusal(reason)
        if sender == INTERNAL:
            self.shed += 1
            if type(item) is Call:
                item.reply.fail(self.rejected_error(reason))
                if item.trace is not None:
                    self.runtime.end_trace(item, f"shed: {reason}")
            return False
        self.queue.rejected += 1
        if sender == LOSSY:
            return False
        raise self.rejected_error(reason)

    def _drop_queued(self, item: Any, reason: str) -> None:
        """Shed an event that was admitted (drop-oldest, deadline); its caller learns why."""
        self.dropped += 1
        self.shed += 1
        self.count_refusal(reason)
        if type(item) is Call:
            item.reply.fail(self.rejected_error(reason))
            if item.trace is not None:
                self.runtime.end_trace(item, f"shed: {reason}")

    def set_admission(self, policy: Any) -> None:
        if policy is not None and not callable(policy):
            raise ConfigError(f"stage {self.name!r}: admission must be callable or None")
        self.policy = policy
        self.update_plain()
        self.queue.wake_all()  # waiting senders re-ask the new policy

    # Workers --------------------------------------------------------------------------------

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
        queue = self.queue
        if queue.putters:  # credits come back as the stage finishes its events
            queue.wake_putter()
        runtime = self.runtime
        if runtime.draining:
            runtime.check_drained()
        await queue.wait_for_event()

    def _take_one(self) -> Any:
        """Take the next event from a special queue: LIFO while a queue stands, deadline
        shedding. Returns _SKIP for an event that was shed instead."""
        queue = self.queue
        buf = queue.buffer
        lifo = self.lifo is not None and len(buf) >= self.lifo.threshold
        item = buf.pop() if lifo else buf.popleft()
        times = queue.times
        if times is not None:
            stamp = times.pop() if lifo else times.popleft()
            deadline = self.deadline
            assert deadline is not None
            now = deadline.clock()
            if deadline.shed(now - stamp, now):
                self._drop_queued(item, "deadline")
                item = _SKIP
            if not buf:
                deadline.emptied()
        if queue.putters:
            queue.wake_putter()
        return item

    def _take(self, most: int) -> list[Any]:
        """Take up to ``most`` queued events at once (batch and blocking workers)."""
        queue = self.queue
        buf = queue.buffer
        if self.special:
            items: list[Any] = []
            while buf and len(items) < most:
                item = self._take_one()
                if item is not _SKIP and not (type(item) is Call and self._caller_gone(item)):
                    items.append(item)
            return items
        count = min(most, len(buf))
        items = [buf.popleft() for _ in range(count)]
        for _ in range(min(count, len(queue.putters))):
            queue.wake_putter()
        return [i for i in items if not (type(i) is Call and self._caller_gone(i))]

    def _caller_gone(self, env: Call) -> bool:
        if env.reply.gone:
            self._drop_queued(env, "caller gone")
            return True
        return False

    async def _event_worker(self, number: int) -> None:
        queue = self.queue
        buf, putters = queue.buffer, queue.putters
        popleft = buf.popleft
        handler = self.stage.handler
        special = self.special
        terminal = not self.nexts
        fast = len(self.nexts) == 1 and not self.nexts[0][1]
        if fast:
            down = self.nexts[0][0]
            dqueue = down.queue
            dbuf, dgetters, dcap = dqueue.buffer, dqueue.getters, dqueue.capacity
        directives = DIRECTIVES
        try:
            while True:
                if not buf:
                    if self._should_exit():
                        return
                    await self._idle()
                    continue
                n = 0
                handler = self.handler  # a controller may switch to the degraded one
                while buf and n < CHUNK:
                    n += 1
                    if special:
                        item = self._take_one()
                        if item is _SKIP:
                            continue
                    else:
                        item = popleft()
                        if putters:
                            queue.wake_putter()
                    if type(item) is Call:
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
                        if down.plain and len(dbuf) < dcap:
                            dbuf.append(out)
                            dqueue.admitted += 1
                            if dgetters:
                                dgetters.pop().set()
                        else:
                            await down.offer(out, down.on_refuse, INTERNAL)
                    self.processed += 1
                if n == CHUNK:
                    if self._should_exit():
                        return
                    await checkpoint()
        finally:
            self._worker_gone()

    async def _batch_worker(self, number: int) -> None:
        buf = self.queue.buffer
        handler = self.stage.handler
        try:
            while True:
                if not buf:
                    if self._should_exit():
                        return
                    await self._idle()
                    continue
                items = self._take(self.batch or 1)
                if items:
                    values = [i.value if type(i) is Call else i for i in items]
                    start = self.clock()
                    try:
                        outs = await handler(values)
                    except Exception as exc:
                        self._observe_chunk(items, start, self.clock(), ok=False)
                        await self._fail_batch(items, exc)
                    else:
                        self._observe_chunk(items, start, self.clock(), ok=True)
                        await self._finish_batch(items, outs)
                if self._should_exit():
                    return
                await checkpoint()
        finally:
            self._worker_gone()

    async def _blocking_worker(self, number: int) -> None:
        buf = self.queue.buffer
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
                    items = self._take(self.batch or 1)
                else:
                    # A fair share of the queue, so one thread does not serialise what
                    # several could run side by side, and no more than the adaptive chunk:
                    # slow handlers take one event at a time, so a backlog stays visible
                    # in the queue (and to a worker-pool controller).
                    share = max(1, len(buf) // max(1, self.workers))
                    items = self._take(min(self.chunk, share))
                if not items:
                    continue
                values = [i.value if type(i) is Call else i for i in items]
                start = self.clock()
                if stage.batch:
                    ok, result = await thread.run(self._thread_batch, values)
                    self._observe_chunk(items, start, self.clock(), ok=ok)
                    if ok:
                        await self._finish_batch(items, result)
                    else:
                        await self._fail_batch(items, result)
                else:
                    # A last stage answers call()s as soon as the thread is done: the callers
                    # wake with this worker instead of one scheduling round after it.
                    answer = _answer_calls(items) if not self.nexts else None
                    results = await thread.run(self._thread_each, values, answer)
                    end = self.clock()
                    self._observe_chunk(items, start, end, ok=True)
                    # Grow the chunk while events are cheap (a hop amortised over many),
                    # shrink it when they are not.
                    if (end - start) / len(items) < _CHEAP:
                        self.chunk = min(CHUNK, self.chunk * 2)
                    else:
                        self.chunk = max(1, self.chunk // 2)
                    for item, (ok, result) in zip(items, results, strict=True):
                        if not ok:
                            await self._fail(item, result)
                        elif type(item) is Call:
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
        # An exception's traceback holds this frame; clear the locals that lead back to the
        # exception (results, and the job that will hold them), so no reference cycle is left.
        try:
            return results
        finally:
            del results, job

    def _thread_batch(self, values: list[Any], job: Job) -> tuple[bool, Any]:
        del job  # as in _thread_each: the job will hold the exception holding this frame
        try:
            return True, self.stage.handler(values)
        except Exception as exc:
            return False, exc

    def _worker_gone(self) -> None:
        self.workers -= 1
        runtime = self.runtime
        if runtime.draining:
            runtime.check_drained()

    # Forwarding -----------------------------------------------------------------------------

    async def _forward(self, target: StageRun, back: bool, item: Any) -> None:
        """Offer an output to a successor with that stage's own refusal mode. A cycle's back
        edge skips admission: the event is already inside the graph, and a cycle must not
        deadlock on its own full queues."""
        if back:
            target.append(item)
        else:
            await target.offer(item, target.on_refuse, INTERNAL)

    def _targets(self, out: Any) -> list[tuple[StageRun | None, bool, Any]]:
        """Where each output goes: (stage, back, value); stage None is a final value.

        Raises RoutingError before anything is sent, so a bad route fails the whole event.
        """
        kind = type(out)
        if kind is To:
            try:
                target, back = self.routes[out.stage]
            except KeyError:
                raise RoutingError(
                    f"stage {self.name!r} routed to {out.stage!r}, which is not one of its "
                    f"successors or declared routes {sorted(self.routes)}"
                ) from None
            return [(target, back, out.value)]
        if kind is Many:
            return [t for value in out.values for t in self._targets(value)]
        if out is DROP:
            return []
        if not self.nexts:
            return [(None, False, out)]
        return [(target, back, out) for target, back in self.nexts]

    async def _send_on(self, item: Any, targets: list[tuple[StageRun | None, bool, Any]]) -> None:
        """Deliver outputs whose targets are known; answer a call's final values."""
        if type(item) is not Call:
            for target, back, value in targets:
                if target is not None:
                    await self._forward(target, back, value)
            return
        reply = item.reply
        sends = []
        for target, back, value in targets:
            if target is None:
                reply.resolve(value)
            else:
                sends.append((target, back, value))
        reply.pending += len(sends)
        if not sends and item.trace is not None:
            self.runtime.end_trace(item, "ok")
        for i, (target, back, value) in enumerate(sends):
            if i == 0:  # the envelope in hand carries the first output on
                item.value = value
                await self._forward(target, back, item)
            else:
                copy = Call(value, reply, item.t_enter, item.trace)
                if item.spans is not None:
                    copy.spans = list(item.spans)
                await self._forward(target, back, copy)
        reply.retire(self.name)

    async def _emit_checked(self, item: Any, out: Any) -> bool:
        """Send a handler's output on; on a routing error fail the event instead."""
        try:
            targets = self._targets(out)
        except RoutingError as exc:
            await self._fail(item, exc)
            return False
        await self._send_on(item, targets)
        return True

    async def _handle_call(self, env: Call) -> None:
        if env.reply.gone:
            self._drop_queued(env, "caller gone")
            return
        if not self.timed:
            try:
                out = await self.handler(env.value)
            except Exception as exc:
                _drop_own_frame(exc)
                await self._fail(env, exc)
                return
            await self._finish_call(env, out)
            return
        start = self.clock()
        try:
            out = await self.handler(env.value)
        except Exception as exc:
            _drop_own_frame(exc)
            self.observe(env, start, self.clock(), ok=False)
            await self._fail(env, exc)
            return
        self.observe(env, start, self.clock(), ok=True)
        await self._finish_call(env, out)

    def observe(self, env: Call, start: float, end: float, ok: bool) -> None:
        """Record a sampled event's queue wait, service and time since entry; trace it."""
        wait, service, response = self.pending
        wait.append(start - env.t_queued)
        service.append(end - start)
        if self.controllers:
            self.recent_response.append(end - env.t_queued)
            self.recent_service.append(end - start)
            policy = self.policy
            if isinstance(policy, PerClass):
                try:
                    cls = policy.classify(env.value)
                except Exception:  # the policy refuses such events; no class to file it under
                    cls = None
                self.recent_by_class.setdefault(cls, []).append(end - env.t_queued)
        if ok:
            response.append(end - env.t_enter)
        if len(wait) >= _FOLD:
            self.fold()
        if env.trace is not None:
            self.runtime.trace_span(env, self.name, start, end, "ok" if ok else "failed")

    def fold(self) -> None:
        """Move pending samples into the histograms (and the recent window)."""
        now = time.monotonic()
        if now >= self._window_end:  # start a new window; keep one before it
            older, current = self.recent
            older.reset()
            if now >= self._window_end + _WINDOW:
                current.reset()  # nothing in the last full window either
            self.recent = (current, older)
            self._window_end = now + _WINDOW
        self.recent[1].record_many(self.pending[2])
        for histogram, samples in zip(self.histograms, self.pending, strict=True):
            histogram.record_many(samples)
            samples.clear()

    def recent_summary(self) -> LatencySummary:
        """Response times over the last one to two seconds."""
        window = LatencyHistogram()
        window.merge(self.recent[0])
        window.merge(self.recent[1])
        return window.summary()

    def _observe_chunk(self, items: list[Any], start: float, end: float, ok: bool) -> None:
        """Timing for a thread chunk or a batch: each envelope in it gets the batch's
        service time (a chunk's events share it out evenly)."""
        envelopes = [i for i in items if type(i) is Call]
        if not envelopes or not self.timed:
            return
        share = (end - start) / (1 if self.stage.batch else len(items))
        for env in envelopes:
            self.observe(env, start, start + share, ok)

    async def _finish_call(self, env: Call, out: Any) -> None:
        if type(out) not in DIRECTIVES:
            # The common cases without building target lists: a final value, or one successor
            # that gets the same envelope back (pending is unchanged: one in, one out).
            nexts = self.nexts
            if not nexts:
                env.reply.resolve(out)
                env.reply.retire(self.name)
                self.processed += 1
                if env.trace is not None:
                    self.runtime.end_trace(env, "ok")
                return
            if len(nexts) == 1:
                env.value = out
                target, back = nexts[0]
                if back or (target.plain and len(target.queue.buffer) < target.capacity):
                    target.append(env)  # admitted at once: no refusal is possible
                else:
                    await target.offer(env, target.on_refuse, INTERNAL)
                self.processed += 1
                return
        if await self._emit_checked(env, out):
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
            if type(item) is Call:
                await self._finish_call(item, out)
            elif await self._emit_checked(item, out):
                self.processed += 1

    # Failures -------------------------------------------------------------------------------

    async def _fail_batch(self, items: list[Any], error: BaseException) -> None:
        if self.stage.on_error == "fail":
            # _fail raises for the graph at once: count and answer the rest of the batch first.
            for item in items[1:]:
                self.failed += 1
                if type(item) is Call:
                    item.reply.fail(error)
            items = items[:1]
        for item in items:
            await self._fail(item, error)

    async def _fail(self, item: Any, error: BaseException) -> None:
        """Count a failed event, tell its caller, and apply the stage's on_error policy."""
        self.failed += 1
        if self.runtime.instruments.hooks["failed"]:
            self.runtime.instruments.call("failed", self.name, error)
        policy = self.stage.on_error
        if type(item) is Call:
            item.reply.fail(error)
            value = item.value
            if item.trace is not None:
                self.runtime.end_trace(item, "failed")
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
            target, back = self.dead
            await self._forward(target, back, Failure(self.name, value, error))
        elif held is not None:
            logger.error(
                "handler failed; event dropped",
                stage=self.name,
                error=repr(error),
                suppressed=held,
                exc_info=error,
            )

    # Feedback control -----------------------------------------------------------------------

    def observation(self, now: float) -> Observation:
        """What happened since the previous observation (see aseda.Observation)."""
        queue = self.queue
        done = self.processed + self.failed
        refused = queue.rejected + self.shed
        if self._obs is None:
            self._obs = (self.runtime.control_started, 0, 0, 0)
        since, admitted, finished, turned_away = self._obs
        self._obs = (now, queue.admitted, done, refused)
        responses, services = tuple(self.recent_response), tuple(self.recent_service)
        by_class = {c: tuple(samples) for c, samples in self.recent_by_class.items()}
        offered, refused_by_class = self._class_counts()
        self.recent_response.clear()
        self.recent_service.clear()
        self.recent_by_class.clear()
        return Observation(
            stage=self.name,
            time=now,
            interval=now - since,
            queue_length=len(queue.buffer),
            capacity=queue.capacity,
            arrivals=queue.admitted - admitted,
            completions=done - finished,
            refused=refused - turned_away,
            workers=self.target,
            workers_min=self.stage.workers_min,
            workers_max=self.stage.workers_max,
            busy=self.in_flight,
            batch=self.batch,
            batch_max=self.stage.batch,
            response_samples=responses,
            service_samples=services,
            rates=self._rates(),
            credits=self.policy.credits if isinstance(self.policy, Credits) else None,
            class_response_samples=by_class,
            class_offered=offered,
            class_refused=refused_by_class,
        )

    def _class_counts(self) -> tuple[dict[Any, int], dict[Any, int]]:
        """Per-class events offered and refused since the last call (a PerClass policy)."""
        policy = self.policy
        if not isinstance(policy, PerClass):
            self._class_totals = None
            return {}, {}
        last = self._class_totals
        now = (policy, dict(policy.offered), dict(policy.refused))
        self._class_totals = now
        if last is None or last[0] is not policy:  # a new policy: its totals are the period's
            return now[1], now[2]
        return (
            {c: n - last[1].get(c, 0) for c, n in now[1].items()},
            {c: n - last[2].get(c, 0) for c, n in now[2].items()},
        )

    def _buckets(self) -> dict[Any, TokenBucket]:
        policy = self.policy
        if isinstance(policy, _WithRate):
            return {None: policy.bucket}
        if isinstance(policy, TokenBucket):
            return {None: policy}
        if isinstance(policy, PerClass):
            return {c: p for c, p in policy.policies.items() if isinstance(p, TokenBucket)}
        return {}

    def _rates(self) -> dict[Any, float]:
        return {c: b.rate for c, b in self._buckets().items()}

    def apply(self, tg: TaskGroup, controller: str, action: Action) -> None:
        """Carry out a controller's action, within the stage's bounds; log it."""
        kind, value = action.kind, action.value
        stage = self.stage
        if kind == "workers":
            count = min(stage.workers_max, max(stage.workers_min, round(value)))
            if count == self.target:
                return
            self.set_workers(tg, count)
        elif kind == "batch":
            if stage.batch is None:
                return self._cannot(controller, action, "it is not a batch stage")
            self.batch = min(stage.batch, max(1, round(value)))
        elif kind == "rate":
            buckets = self._buckets()
            if not buckets and isinstance(self.policy, PerClass):
                return self._cannot(controller, action, "its classes have no token bucket")
            if not buckets:  # a rate controller on a stage with no bucket: give it one
                self.auto_bucket = TokenBucket(max(value, 1e-3), burst=_burst(value))
                # Beside the stage's own policy, if it has one: a controller must not
                # silently drop a threshold (or anything else) the user declared.
                own = self.policy
                self.set_admission(
                    self.auto_bucket if own is None else _WithRate(own, self.auto_bucket)
                )
            elif action.cls in buckets:
                bucket = buckets[action.cls]
                bucket.rate = max(value, 1e-3)
                if bucket is self.auto_bucket:
                    # A bucket aseda installed bursts a tenth of a second's worth at the rate
                    # in force; kept at the first rate, it would not bind (or never recover).
                    bucket.burst = _burst(value)
            else:
                return self._cannot(controller, action, f"no token bucket for class {action.cls!r}")
        elif kind == "threshold":
            if not isinstance(self.policy, Threshold):
                self.set_admission(Threshold(max(1, round(value))))
            else:
                self.policy.limit = max(1, round(value))
        elif kind == "credits":
            if not isinstance(self.policy, Credits):
                self.set_admission(Credits(max(1, round(value))))
            else:
                self.policy.credits = max(1, round(value))
                self.queue.wake_all()
        elif kind == "degrade":
            on = bool(value)
            degrade = stage.on_refuse
            if not isinstance(degrade, Degrade) or stage.blocking or stage.batch:
                return self._cannot(
                    controller, action, "it needs on_refuse=aseda.Degrade(...) and per-event async"
                )
            self.degrading = on
            self.handler = _as_async(degrade.handler) if on else stage.handler
        else:
            return self._cannot(controller, action, f"unknown action kind {kind!r}")
        self.last_decision = f"{controller}: {action.reason}"
        logger.info(
            "controller decision",
            stage=self.name,
            controller=controller,
            action=kind,
            value=value,
            cls=action.cls,
            reason=action.reason,
        )
        self.runtime.decided(self.name, controller, action)

    def _cannot(self, controller: str, action: Action, why: str) -> None:
        held = self.policy_log.allow()
        if held is not None:
            logger.warning(
                "controller action ignored",
                stage=self.name,
                controller=controller,
                action=action.kind,
                why=why,
                suppressed=held,
            )

    # Introspection --------------------------------------------------------------------------

    def stats(self) -> StageStats:
        queue, stage = self.queue, self.stage
        length = len(queue.buffer)
        self.fold()
        now = time.monotonic()
        span = now - self._rate_at
        if span >= 1.0:  # a rate over at least a second, then start a new window
            self.throughput = (self.processed - self._rate_done) / span
            self._rate_at, self._rate_done = now, self.processed
        elif not self.throughput and span > 0:  # no full window yet: what there is so far
            self.throughput = (self.processed - self._rate_done) / span
        wait, service, response = (h.summary() for h in self.histograms)
        return StageStats(
            name=self.name,
            queue_length=length,
            capacity=queue.capacity,
            workers=self.workers,
            workers_min=stage.workers_min,
            workers_max=stage.workers_max,
            batch=self.batch,
            blocking=stage.blocking,
            admitted=queue.admitted,
            rejected=queue.rejected,
            processed=self.processed,
            failed=self.failed,
            in_flight=self.unfinished() - length,
            senders_waiting=len(queue.putters),
            shed=self.shed,
            dropped=self.dropped,
            degraded=self.degraded,
            redirected=self.redirected,
            refusals=dict(self.reasons),
            admission=repr(self.policy) if self.policy is not None else None,
            queue_wait=wait,
            service=service,
            response=response,
            throughput=self.throughput,
            recent_response=self.recent_summary(),
            control=tuple(c.name for c in self.controllers) if self.control_enabled else (),
            last_decision=self.last_decision,
        )
