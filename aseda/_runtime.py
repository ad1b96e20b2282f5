"""A running graph: the task group, feeding, drain, cancellation and control.

Each stage's own machinery (admission, workers, forwarding) is in ``_stagerun.py``.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint

from ._admission import AdmissionPolicy, Policy, Refusal, normalize
from ._bottleneck import find_bottleneck
from ._control import Action, Controller
from ._errors import ConfigError, GraphClosed
from ._instrument import Instrument, Instruments, Span
from ._log import logger
from ._queue import event_type, loop_clock
from ._refusals import OnRefuse, Redirect, check_on_refuse
from ._reply import NO_REPLY, NO_VALUE, Call, Reply
from ._stagerun import CHUNK, RAISE, StageRun
from ._stats import GraphStats

if TYPE_CHECKING:
    from ._graph import Graph

__all__ = ["Reservation", "RunningGraph"]


class RunningGraph:
    """The handle of a running graph, given by ``async with graph.run() as running``.

    Feed it with :meth:`send`, :meth:`send_nowait`, :meth:`send_lossy`, :meth:`call` or a
    whole batch with :meth:`send_many` and :meth:`prepare`; read :meth:`stats`; resize a pool
    with :meth:`set_workers`; swap a policy with :meth:`set_admission`. Its methods run on the
    event loop's thread.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        statistics: bool = True,
        sample_rate: float = 1000.0,
        trace: float = 0.0,
        instruments: Sequence[Instrument] = (),
        control: Sequence[Controller] | Mapping[str, Sequence[Controller]] = (),
        control_interval: float = 1.0,
    ) -> None:
        if isinstance(control_interval, bool) or not (
            isinstance(control_interval, (int, float)) and 0 < control_interval < math.inf
        ):
            raise ConfigError(
                f"control_interval must be a positive number of seconds, not {control_interval!r}"
            )
        if isinstance(sample_rate, bool) or not (
            isinstance(sample_rate, (int, float)) and 0 < sample_rate < math.inf
        ):
            raise ConfigError(f"sample_rate must be a positive number, not {sample_rate!r}")
        if isinstance(trace, bool) or not (isinstance(trace, (int, float)) and 0 <= trace <= 1):
            raise ConfigError(f"trace must be a fraction in [0, 1], not {trace!r}")
        self.graph = graph
        self.new_event = event_type()
        self.statistics = statistics
        self.instruments = Instruments(instruments)
        # Sampling: every n-th event sent from outside travels in a timing envelope; n adapts
        # so that about `sample_rate` events a second are sampled, whatever the load.
        self._min_gap = 1.0 / sample_rate
        self._sample_every = 1
        self._countdown = 1 if statistics or trace else 1 << 62
        self._last_sample = 0.0
        self._trace = float(trace)
        self._trace_credit = 0.0
        self._trace_ids = 0
        self._started = time.monotonic()
        self.clock = loop_clock()
        self._t0 = self.clock()
        self.control_interval = float(control_interval)
        self.control_started = 0.0
        self._control_scope: anyio.CancelScope | None = None
        self._decision_listeners: list[Callable[[str, str, Action], None]] = []
        self.context = contextvars.copy_context()
        self._stages = {s.name: StageRun(self, s) for s in graph.stages}
        for edge in graph.edges:
            source, target = self._stages[edge.source], self._stages[edge.target]
            link = (target, edge.back)
            if edge.kind == "next":
                source.nexts += (link,)
                source.routes[edge.target] = link
            elif edge.kind == "route":
                source.routes[edge.target] = link
            elif edge.kind == "dead_letter":
                source.dead = link
        self._entry = self._stages[graph.entry]
        self._setup_control(control)
        self.accepting = False
        self.draining = False
        self._state = "starting"
        self._drained: anyio.Event | None = None
        self._replies: set[Reply] = set()
        self._tg: TaskGroup | None = None
        self._sends = 0
        self._last_stats: GraphStats | None = None
        #: admitted events abandoned by a cancelled or failed run
        self.abandoned = 0

    @classmethod
    @asynccontextmanager
    async def _start(cls, graph: Graph, **options: Any) -> AsyncIterator[RunningGraph]:
        self = cls(graph, **options)
        opened: list[StageRun] = []
        body_error: Exception | None = None
        clean = False
        try:
            for run in self._stages.values():
                for hook in run.stage.init_hooks:
                    result = hook()
                    if isawaitable(result):
                        await result
                opened.append(run)  # its close hooks run only if all its init hooks did
            # Workers see the context as the init hooks left it.
            self.context = contextvars.copy_context()
            try:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    for run in self._stages.values():
                        run.spawn(tg, run.target)
                        logger.debug("stage started", stage=run.name, workers=run.target)
                    self.accepting = True
                    self._state = "running"
                    self._started = time.monotonic()
                    self._t0 = self.clock()
                    if any(run.controllers for run in self._stages.values()):
                        self._control_scope = anyio.CancelScope()
                        self.control_started = anyio.current_time()
                        tg.start_soon(self._control_loop, name="aseda:control")
                    if self.instruments.hooks["graph_started"]:
                        self.instruments.call("graph_started", graph)
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
            finally:
                if self._state == "cancelled":
                    self._count_abandoned()
            if self._state != "cancelled":
                self._state = "stopped"
            if body_error is not None:
                raise body_error
            clean = True
        finally:
            self.accepting = False
            with anyio.CancelScope(shield=True):
                await self._close(opened, raise_errors=clean)
            if self.instruments.hooks["graph_stopped"]:
                self.instruments.call("graph_stopped", self.stats())

    async def _close(self, opened: list[StageRun], raise_errors: bool) -> None:
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
        if self._control_scope is not None:
            self._control_scope.cancel()

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
        for reply in self._replies:
            reply.abandon()
        for run in self._stages.values():
            run.queue.wake_all()  # senders waiting for room learn the graph is closed

    def _count_abandoned(self) -> None:
        # Counted once every worker has stopped: a worker may finish its chunk first.
        self.abandoned = sum(run.unfinished() for run in self._stages.values())
        if self.abandoned:
            logger.warning("graph cancelled; admitted events abandoned", abandoned=self.abandoned)

    # Feedback control -------------------------------------------------------------------------

    def _setup_control(
        self, control: Sequence[Controller] | Mapping[str, Sequence[Controller]]
    ) -> None:
        """Give each stage fresh copies of its controllers (its own, else the run's)."""
        if isinstance(control, Mapping):
            unknown = set(control) - set(self._stages) - {"*"}
            if unknown:
                raise ConfigError(f"control names unknown stages: {sorted(unknown)}")
            by_stage = {name: control.get(name, control.get("*", ())) for name in self._stages}
        else:
            by_stage = {name: control for name in self._stages}
        for name, run in self._stages.items():
            chosen = run.stage.control or by_stage[name]
            for controller in chosen:
                if not isinstance(controller, Controller):
                    raise ConfigError(
                        f"stage {name!r}: {controller!r} is not a controller (it needs a name "
                        "and observe(observation) -> actions)"
                    )
            # Copies: a controller keeps state, and a run starts from the definition's.
            run.controllers = [copy.deepcopy(c) for c in chosen]

    async def _control_loop(self) -> None:
        assert self._control_scope is not None and self._tg is not None
        with self._control_scope:
            while True:
                await anyio.sleep(self.control_interval)
                now = anyio.current_time()
                for run in self._stages.values():
                    if run.controllers and run.control_enabled:
                        self._control(run, now)

    def _control(self, run: StageRun, now: float) -> None:
        assert self._tg is not None
        observation = run.observation(now)
        for controller in list(run.controllers):
            try:
                actions = controller.observe(observation)
            except Exception as exc:  # a broken controller stops; the stage goes on
                logger.error(
                    "controller failed and was removed",
                    stage=run.name,
                    controller=getattr(controller, "name", repr(controller)),
                    error=repr(exc),
                    exc_info=exc,
                )
                run.controllers.remove(controller)
                continue
            for action in actions:
                run.apply(self._tg, controller.name, action)

    def decided(self, stage: str, controller: str, action: Action) -> None:
        for listener in list(self._decision_listeners):
            listener(stage, controller, action)

    def add_decision_listener(self, listener: Callable[[str, str, Action], None]) -> None:
        """Call ``listener(stage, controller, action)`` after each controller decision."""
        self._decision_listeners.append(listener)

    def remove_decision_listener(self, listener: Callable[[str, str, Action], None]) -> None:
        """Stop calling a listener added with :meth:`add_decision_listener`."""
        self._decision_listeners.remove(listener)

    def set_control(self, stage: str, enabled: bool) -> None:
        """Switch a stage's controllers off (they keep their state) or back on.

        Raises:
            ConfigError: no such stage.
        """
        self.stage_run(stage).control_enabled = bool(enabled)

    # Feeding ----------------------------------------------------------------------------------

    def stage_run(self, name: str | None) -> StageRun:
        if name is None:
            return self._entry
        try:
            return self._stages[name]
        except KeyError:
            raise ConfigError(f"no stage named {name!r} in this graph") from None

    def _mode(self, run: StageRun, on_refuse: OnRefuse | None, method: str) -> OnRefuse:
        if on_refuse is None:
            return run.on_refuse
        check_on_refuse(on_refuse, method)
        if isinstance(on_refuse, Redirect):
            self.stage_run(on_refuse.stage)
            if on_refuse.stage == run.name:
                raise ConfigError(f"{method}: stage {run.name!r} cannot redirect to itself")
        return on_refuse

    def _check_open(self) -> None:
        if not self.accepting:
            raise GraphClosed(
                "the graph is not accepting events (it is draining, stopped or cancelled)"
            )

    def _sample(self, event: Any) -> Any:
        """Wrap a sampled event in a timing envelope, and adapt the sampling interval."""
        now = self.clock()
        gap, self._last_sample = now - self._last_sample, now
        every = self._sample_every
        if gap < self._min_gap:
            every = min(every * 2, 1 << 20)
        elif gap > 4 * self._min_gap and every > 1:
            every //= 2
        trace = None
        if self._trace:
            every = min(every, max(1, int(1 / self._trace)))  # enough samples to trace from
            trace = self._trace_id(self._sample_every)  # this sample stands for that many
        self._sample_every = self._countdown = every
        return Call(event, NO_REPLY, now, trace)

    def _trace_id(self, events: int) -> int | None:
        """A new trace id if ``events`` more events earn the next trace, else None."""
        self._trace_credit += self._trace * events
        if self._trace_credit < 1 - 1e-9:  # tolerance: ten times 0.1 is a whole trace
            return None
        self._trace_credit -= 1
        self._trace_ids += 1
        return self._trace_ids

    def trace_span(self, env: Call, stage: str, start: float, end: float, outcome: str) -> None:
        """Keep one traced event's visit to a stage, and hand it to the instruments."""
        assert env.spans is not None
        t0 = self._t0
        visit = (stage, env.t_queued - t0, start - t0, end - t0, outcome)
        env.spans.append(visit)
        if self.instruments.hooks["span"]:
            self.instruments.call("span", Span(env.trace or 0, *visit))

    def end_trace(self, env: Call, outcome: str) -> None:
        """A traced event left the graph: log its whole path as one structlog event.

        One event per trace, not per stage, keeps tracing cheap: the logging pipeline runs
        once per traced event however many stages it crossed.
        """
        logger.info(
            "trace",
            trace_id=env.trace,
            outcome=outcome,
            # [stage, enqueued, started, ended, outcome] per visit; seconds since the start
            spans=env.spans or [],
        )

    async def _admit(self, run: StageRun, item: Any, mode: OnRefuse, sender: int) -> bool:
        self._check_open()
        self._sends += 1
        countdown = self._countdown - 1
        if countdown:
            self._countdown = countdown
        elif type(item) is not Call:
            item = self._sample(item)
        refusal = run.admit_now(item)
        if refusal is None:
            if self._sends % CHUNK == 0:
                await checkpoint()  # a sender that never waits must still yield now and then
            return True
        return await run.offer(item, mode, sender, refusal=refusal)

    async def send(
        self, event: Any, *, to: str | None = None, on_refuse: OnRefuse | None = None
    ) -> None:
        """Admit ``event`` to the entry stage (or the stage named ``to``).

        On refusal it does what the stage's ``on_refuse`` says (or ``on_refuse`` here): by
        default it waits for room (backpressure). It checkpoints only now and then when it
        does not wait, so a fast producer pays no scheduler round trip per event.

        Raises:
            Rejected: refused and the mode is ``"shed"``.
            GraphClosed: the graph is draining, stopped or cancelled (also while waiting).
            ConfigError: no stage is named ``to`` (or by a ``Redirect``); a bad ``on_refuse``.
        """
        run = self.stage_run(to)
        await self._admit(run, event, self._mode(run, on_refuse, "send"), RAISE)

    def send_nowait(self, event: Any, *, to: str | None = None) -> None:
        """Admit ``event`` now or refuse it, whatever the stage's ``on_refuse``.

        Raises:
            Rejected: the queue is full or the admission policy refused (counted in
                ``rejected`` and by reason).
            GraphClosed: the graph is draining, stopped or cancelled.
            ConfigError: no stage is named ``to``.
        """
        run = self.stage_run(to)
        refusal = self._admit_or_count(run, event)
        if refusal is not None:
            raise run.rejected_error(refusal.reason)

    def _admit_or_count(self, run: StageRun, event: Any) -> Refusal | None:
        """Admit ``event`` now (sampling it, maybe), or count the refusal the sender is told."""
        self._check_open()
        countdown = self._countdown - 1
        if countdown:
            self._countdown = countdown
        else:
            event = self._sample(event)
        refusal = run.admit_now(event)
        if refusal is not None:
            run.queue.rejected += 1
            run.count_refusal(refusal.reason)
        return refusal

    def send_lossy(self, event: Any, *, to: str | None = None) -> bool:
        """Admit ``event`` now and return True, or return False if refused (counted).

        SEDA's ``enqueue_lossy``: the refusal is counted in ``rejected`` and by reason, never
        silent, but the sender is not interrupted.

        Raises:
            GraphClosed: the graph is draining, stopped or cancelled.
            ConfigError: no stage is named ``to``.
        """
        return self._admit_or_count(self.stage_run(to), event) is None

    async def call(
        self, event: Any, *, to: str | None = None, on_refuse: OnRefuse | None = None
    ) -> Any:
        """Send ``event`` and wait for the final value its path produces.

        The final value is what the last stage on the path (one with no successors) returns.
        With fan-out or ``Many``, the first final value answers; an error answers only when
        no copy of the event produced a value. A refusal answers as the refusal mode says:
        ``"shed"`` raises :class:`Rejected`, ``Degrade`` returns the degraded value (once it
        has travelled on), ``"wait"`` waits for room.

        Raises:
            Exception: whatever a handler on the path raised, as itself.
            Rejected: the event was refused with ``"shed"``, at the entry or further on.
            Dropped: every path of the event was filtered out.
            Abandoned: the graph was cancelled first.
            GraphClosed: the graph is draining, stopped or cancelled.
        """
        run = self.stage_run(to)
        mode = self._mode(run, on_refuse, "call")
        reply = Reply(self.new_event())
        self._replies.add(reply)
        try:
            trace = self._trace_id(1) if self._trace else None
            await self._admit(run, Call(event, reply, self.clock(), trace), mode, RAISE)
            await reply.event.wait()
        finally:
            self._replies.discard(reply)
            if not reply.done:
                reply.gone = True  # the caller gave up: workers skip the event
        value, error = reply.value, reply.error
        del reply  # no cycle: the traceback holds this frame, the reply holds the error
        if value is NO_VALUE:
            assert error is not None
            try:
                raise error
            finally:
                del error
        return value

    def _admit_many(self, run: StageRun, events: list[Any]) -> Refusal | None:
        queue = run.queue
        if len(events) > queue.capacity:
            return Refusal(f"batch of {len(events)} exceeds the queue's capacity")
        if len(queue.buffer) + queue.reserved + len(events) > queue.capacity:
            return Refusal("queue full")
        policy = run.policy
        if policy is None:
            return None
        try:
            if isinstance(policy, AdmissionPolicy):
                return policy.admit_many(events, run)
            return AdmissionPolicy.admit_many(_Adapter(policy), events, run)
        except Exception as exc:
            run.log_error("admission policy failed; batch refused", exc)
            return Refusal("policy error")

    def prepare(self, events: Iterable[Any], *, to: str | None = None) -> Reservation:
        """Reserve room for every event now, or refuse them all (Sandstorm's enqueue_prepare).

        The events are admitted by :meth:`Reservation.commit` and released by
        :meth:`Reservation.abort`; in between the room is held and no other sender can take it.
        A reservation already took the admission policy's tokens.

        Raises:
            Rejected: there is no room for all of them, or the policy refused (none admitted).
            GraphClosed: the graph is draining, stopped or cancelled.
        """
        run = self.stage_run(to)
        self._check_open()
        batch = list(events)
        refusal = self._admit_many(run, batch)
        if refusal is not None:
            run.queue.rejected += len(batch)
            run.count_refusal(refusal.reason, len(batch))
            raise run.rejected_error(refusal.reason)
        return Reservation(self, run, batch)

    def send_many_nowait(self, events: Iterable[Any], *, to: str | None = None) -> None:
        """Admit every event at once or none (Sandstorm's ``enqueue_many``).

        Raises:
            Rejected: there is no room for all of them, or the policy refused (none admitted).
            GraphClosed: the graph is draining, stopped or cancelled.
        """
        self.prepare(events, to=to).commit()

    async def send_many(self, events: Iterable[Any], *, to: str | None = None) -> None:
        """Admit every event at once, waiting until there is room for all of them.

        Raises:
            Rejected: the batch can never fit (larger than the queue or the bucket's burst).
            GraphClosed: the graph is draining, stopped or cancelled (also while waiting).
        """
        run = self.stage_run(to)
        batch = list(events)
        while True:
            self._check_open()
            refusal = self._admit_many(run, batch)
            if refusal is None:
                Reservation(self, run, batch).commit()
                return
            if refusal.reason.startswith("batch of"):
                run.queue.rejected += len(batch)
                run.count_refusal(refusal.reason, len(batch))
                raise run.rejected_error(refusal.reason)
            if refusal.retry_after is not None:
                with anyio.move_on_after(refusal.retry_after):
                    await run.queue.wait_for_room()
            else:
                await run.queue.wait_for_room()

    # Control and introspection ---------------------------------------------------------------

    def set_workers(self, stage: str, workers: int) -> None:
        """Resize a stage's worker pool (its threads too, for a blocking stage).

        Growing starts workers at once; shrinking retires surplus workers at their next chunk
        boundary, never mid-event.

        Raises:
            ConfigError: no such stage, or ``workers`` outside the stage's [min, max].
            GraphClosed: the graph has stopped or was cancelled.
        """
        if self._tg is None or self._state not in ("running", "draining"):
            raise GraphClosed("the graph is not running")
        self.stage_run(stage).set_workers(self._tg, workers)

    def set_admission(self, stage: str, policy: Policy | None) -> None:
        """Swap a stage's admission policy while running (``None`` removes it).

        Senders waiting for room ask the new policy at once.

        Raises:
            ConfigError: no such stage, or ``policy`` is not callable.
        """
        self.stage_run(stage).set_admission(policy)

    def stats(self) -> GraphStats:
        """Return an immutable snapshot of every stage."""
        now = time.monotonic()
        snapshot = GraphStats(
            stages=tuple(run.stats() for run in self._stages.values()),
            state=self._state,
            abandoned=self.abandoned,
            time=now,
            elapsed=now - self._started,
        )
        # Judged against the previous snapshot (taken by anyone), so growth shows.
        found = find_bottleneck(snapshot, self._last_stats, graph=self.graph)
        snapshot = dataclasses.replace(snapshot, bottleneck=found)
        self._last_stats = snapshot
        return snapshot

    @property
    def state(self) -> str:
        """``"starting"``, ``"running"``, ``"draining"``, ``"stopped"`` or ``"cancelled"``."""
        return self._state


class _Adapter(AdmissionPolicy):
    """Lets a plain callable policy use AdmissionPolicy.admit_many."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Policy) -> None:
        self._fn = fn

    def __call__(self, event: Any, stage: Any) -> Refusal | None:
        return normalize(self._fn(event, stage))


class Reservation:
    """Room held in a stage's queue for a batch: commit it or abort it, once.

    Usable as a context manager: leaving the block without :meth:`commit` aborts.
    """

    __slots__ = ("_done", "_events", "_run", "_runtime")

    def __init__(self, runtime: RunningGraph, run: StageRun, events: list[Any]) -> None:
        self._runtime, self._run, self._events = runtime, run, events
        self._done = False
        run.queue.reserved += len(events)
        run.update_plain()

    def _release(self) -> None:
        if self._done:
            raise RuntimeError("this reservation was already committed or aborted")
        self._done = True
        self._run.queue.reserved -= len(self._events)
        self._run.update_plain()

    def commit(self) -> None:
        """Admit every reserved event, in order.

        Raises:
            GraphClosed: the graph stopped accepting since (the room is released).
        """
        self._release()
        if not self._runtime.accepting:
            raise GraphClosed("the graph stopped accepting events before the commit")
        for event in self._events:
            self._run.append(event)

    def abort(self) -> None:
        """Give the room back; none of the events is admitted."""
        self._release()
        self._run.queue.wake_all()

    def __len__(self) -> int:
        return len(self._events)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._done:
            self.abort()
