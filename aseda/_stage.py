"""What a user declares: the :func:`stage` decorator and the :class:`Stage` definition.

A Stage is a description (handler plus options, fixed once declared; hooks may be added).
Running it is the runtime's job, so one Stage can appear in several graphs and runs.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload

from ._admission import Policy, QueueDeadline
from ._errors import ConfigError, GraphError
from ._outputs import DeadLetter
from ._refusals import AdaptiveLIFO, OnRefuse, check_on_refuse

if TYPE_CHECKING:
    from ._graph import Flow

__all__ = ["DEFAULT_CAPACITY", "Hook", "OnError", "Stage", "StageLike", "stage"]

#: Queue capacity of a stage that does not say: bounded, as SEDA's queues are.
DEFAULT_CAPACITY = 1024

OnError: TypeAlias = "Literal['log', 'fail'] | DeadLetter"
Hook: TypeAlias = "Callable[[], Awaitable[None] | None]"
Workers: TypeAlias = "int | tuple[int, int] | tuple[int, int, int]"
Overflow: TypeAlias = "Literal['refuse', 'drop_oldest']"
Order: TypeAlias = "Literal['fifo', 'adaptive_lifo'] | AdaptiveLIFO"


def _callable_kind(fn: Callable[..., Any]) -> str:
    """Classify a handler: 'async', 'sync', 'asyncgen' or 'gen'."""
    target: Any = fn
    plain = inspect.isfunction(fn) or inspect.ismethod(fn) or isinstance(fn, functools.partial)
    if not plain and not inspect.isbuiltin(fn):
        target = type(fn).__call__  # a callable object: its __call__ says what it is
    if inspect.isasyncgenfunction(target):
        return "asyncgen"
    if inspect.isgeneratorfunction(target):
        return "gen"
    if inspect.iscoroutinefunction(target):
        return "async"
    return "sync"


def _default_name(fn: Callable[..., Any]) -> str:
    """A stable name: the function's, a partial's function's, or a callable object's class."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def _check_workers(workers: Workers) -> tuple[int, int, int]:
    """Return (min, initial, max) from an int, (min, max) or (min, initial, max)."""
    if isinstance(workers, bool):
        raise ConfigError(f"workers must be an int or a tuple of ints, not {workers!r}")
    if isinstance(workers, int):
        low = initial = high = workers
    elif isinstance(workers, tuple) and len(workers) == 2:
        low, high = workers
        initial = low
    elif isinstance(workers, tuple) and len(workers) == 3:
        low, initial, high = workers
    else:
        raise ConfigError(f"workers must be n, (min, max) or (min, initial, max), not {workers!r}")
    for value in (low, initial, high):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"workers must be whole numbers, not {workers!r}")
    if low < 1:
        raise ConfigError(f"a stage needs at least one worker, got min={low}")
    if low > high:
        raise ConfigError(f"workers min ({low}) is greater than max ({high})")
    if not low <= initial <= high:
        raise ConfigError(f"initial workers ({initial}) is outside [{low}, {high}]")
    return low, initial, high


class Stage:
    """A stage: an event handler with its queue, worker pool and error policy.

    Create one with :func:`stage`. Compose stages with ``>>`` into a :class:`aseda.Graph`.
    Calling a stage calls its handler directly, which is handy in unit tests.

    Attributes:
        name: unique name within a graph (defaults to the handler's ``__name__``).
        handler: the user's callable.
        capacity: most events the queue holds (``math.inf`` only when asked for).
        workers_min, workers_initial, workers_max: the worker pool's bounds and start size.
        batch: ``None`` for a per-event handler, else the most events one call receives.
        blocking: runs on the stage's own threads instead of the event loop.
        on_error: ``"log"``, ``"fail"`` or :class:`aseda.DeadLetter`.
        admission, on_refuse, overflow, order, deadline: load conditioning; see :func:`stage`.
    """

    __slots__ = (
        "__weakref__",
        "_close_hooks",
        "_init_hooks",
        "admission",
        "batch",
        "blocking",
        "capacity",
        "control",
        "deadline",
        "handler",
        "name",
        "on_error",
        "on_refuse",
        "order",
        "overflow",
        "workers_initial",
        "workers_max",
        "workers_min",
    )

    def __init__(
        self,
        handler: Callable[..., Any],
        *,
        name: str | None = None,
        capacity: float = DEFAULT_CAPACITY,
        workers: Workers = 1,
        batch: int | None = None,
        blocking: bool | None = None,
        on_error: OnError = "log",
        init: Hook | Sequence[Hook] = (),
        close: Hook | Sequence[Hook] = (),
        admission: Policy | None = None,
        on_refuse: OnRefuse = "wait",
        overflow: Overflow = "refuse",
        order: Order = "fifo",
        deadline: QueueDeadline | None = None,
        control: Sequence[Any] = (),
    ) -> None:
        if not callable(handler):
            raise ConfigError(f"a stage handler must be callable, not {handler!r}")
        kind = _callable_kind(handler)
        label = name if name is not None else _default_name(handler)
        if kind in ("asyncgen", "gen"):
            raise GraphError(
                f"stage {label!r}: generator handlers are not supported; "
                "return aseda.Many(values) to emit several outputs"
            )
        if blocking is None:
            blocking = kind == "sync"
        elif blocking and kind == "async":
            raise GraphError(
                f"stage {label!r}: blocking=True needs a plain def (it runs on a thread), "
                "but the handler is async def"
            )
        elif not blocking and kind == "sync":
            raise GraphError(
                f"stage {label!r}: the handler is a plain def, so it can only run on a thread; "
                "make it async def or drop blocking=False"
            )
        if not isinstance(label, str) or not label:
            raise ConfigError(f"a stage name must be a non-empty string, not {name!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, (int, float)):
            raise ConfigError(f"stage {label!r}: capacity must be a number, not {capacity!r}")
        if capacity != math.inf and (
            math.isnan(capacity)
            or math.isinf(capacity)
            or capacity != int(capacity)
            or capacity < 1
        ):
            raise ConfigError(
                f"stage {label!r}: capacity must be a whole number >= 1 or math.inf "
                f"(unbounded, on request only), not {capacity!r}"
            )
        if batch is not None and (
            isinstance(batch, bool) or not isinstance(batch, int) or batch < 1
        ):
            raise ConfigError(f"stage {label!r}: batch must be None or an int >= 1, not {batch!r}")
        if not (on_error in ("log", "fail") or isinstance(on_error, DeadLetter)):
            raise ConfigError(
                f"stage {label!r}: on_error must be 'log', 'fail' or aseda.DeadLetter(name), "
                f"not {on_error!r}"
            )
        try:
            low, initial, high = _check_workers(workers)
        except ConfigError as exc:
            raise ConfigError(f"stage {label!r}: {exc}") from None
        if admission is not None and not callable(admission):
            raise ConfigError(
                f"stage {label!r}: admission must be a policy, a callable "
                f"(event, stage) -> accept/refuse, or None, not {admission!r}"
            )
        check_on_refuse(on_refuse, f"stage {label!r}")
        if overflow not in ("refuse", "drop_oldest"):
            raise ConfigError(
                f"stage {label!r}: overflow must be 'refuse' or 'drop_oldest', not {overflow!r}"
            )
        if order == "adaptive_lifo":
            order = AdaptiveLIFO()
        elif order != "fifo" and not isinstance(order, AdaptiveLIFO):
            raise ConfigError(
                f"stage {label!r}: order must be 'fifo', 'adaptive_lifo' or "
                f"aseda.AdaptiveLIFO(threshold), not {order!r}"
            )
        if deadline is not None and not isinstance(deadline, QueueDeadline):
            raise ConfigError(
                f"stage {label!r}: deadline must be an aseda.QueueDeadline or None, "
                f"not {deadline!r}"
            )
        self.handler = handler
        self.name = label
        self.capacity = capacity if capacity == math.inf else int(capacity)
        self.workers_min, self.workers_initial, self.workers_max = low, initial, high
        self.batch = batch
        self.blocking = bool(blocking)
        self.on_error = on_error
        self.admission = admission
        self.on_refuse = on_refuse
        self.overflow = overflow
        self.order: AdaptiveLIFO | None = order if isinstance(order, AdaptiveLIFO) else None
        self.deadline = deadline
        from ._control import Controller

        for controller in control:
            if not isinstance(controller, Controller):
                raise ConfigError(
                    f"stage {label!r}: {controller!r} is not a controller (it needs a name and "
                    "observe(observation) -> actions)"
                )
        self.control = tuple(control)
        self._init_hooks = list(_hooks(init, label, "init"))
        self._close_hooks = list(_hooks(close, label, "close"))

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_close_hooks"):  # fully built: options are fixed
            raise AttributeError(
                f"stage {self.name!r}: options are fixed once declared; declare a new stage"
            )
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        kind = "blocking " if self.blocking else ""
        batch = f", batch={self.batch}" if self.batch else ""
        return f"<aseda.Stage {kind}{self.name!r} capacity={self.capacity}{batch}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.handler(*args, **kwargs)

    # Composition ---------------------------------------------------------------------------

    def __rshift__(self, other: Any) -> Flow:
        from ._graph import Flow

        return Flow.of(self).then(other)

    def __rrshift__(self, other: Any) -> Flow:
        from ._graph import Flow

        return Flow.of(other).then(self)

    def routes_to(self, *targets: Stage | str) -> Flow:
        """Declare stages this stage may send to by name with ``aseda.To(name, value)``.

        Route targets do not receive the stage's plain outputs; only routed ones.
        """
        from ._graph import Flow

        return Flow.routes(self, targets)

    # Lifecycle hooks -----------------------------------------------------------------------

    def on_init(self, hook: Hook) -> Hook:
        """Decorator: run ``hook`` (sync or async) before the stage's workers start."""
        self._init_hooks.extend(_hooks(hook, self.name, "init"))
        return hook

    def on_close(self, hook: Hook) -> Hook:
        """Decorator: run ``hook`` (sync or async) after the stage's workers have stopped."""
        self._close_hooks.extend(_hooks(hook, self.name, "close"))
        return hook

    @property
    def init_hooks(self) -> tuple[Hook, ...]:
        """Hooks run before the workers start, in order."""
        return tuple(self._init_hooks)

    @property
    def close_hooks(self) -> tuple[Hook, ...]:
        """Hooks run after the workers stop, in order."""
        return tuple(self._close_hooks)


def _hooks(value: Hook | Sequence[Hook], stage: str, what: str) -> Iterable[Hook]:
    if callable(value):
        hooks: tuple[Any, ...] = (value,)
    elif isinstance(value, (list, tuple)):
        hooks = tuple(value)
    else:
        raise ConfigError(f"stage {stage!r}: {what} hook {value!r} is not callable")
    for hook in hooks:
        if not callable(hook):
            raise ConfigError(f"stage {stage!r}: {what} hook {hook!r} is not callable")
    return hooks


StageLike: TypeAlias = "Stage | Flow | Sequence[Stage | Flow]"


@overload
def stage(
    handler: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    capacity: float = DEFAULT_CAPACITY,
    workers: Workers = 1,
    batch: int | None = None,
    blocking: bool | None = None,
    on_error: OnError = "log",
    init: Hook | Sequence[Hook] = (),
    close: Hook | Sequence[Hook] = (),
    admission: Policy | None = None,
    on_refuse: OnRefuse = "wait",
    overflow: Overflow = "refuse",
    order: Order = "fifo",
    deadline: QueueDeadline | None = None,
    control: Sequence[Any] = (),
) -> Stage: ...


@overload
def stage(
    handler: None = None,
    /,
    *,
    name: str | None = None,
    capacity: float = DEFAULT_CAPACITY,
    workers: Workers = 1,
    batch: int | None = None,
    blocking: bool | None = None,
    on_error: OnError = "log",
    init: Hook | Sequence[Hook] = (),
    close: Hook | Sequence[Hook] = (),
    admission: Policy | None = None,
    on_refuse: OnRefuse = "wait",
    overflow: Overflow = "refuse",
    order: Order = "fifo",
    deadline: QueueDeadline | None = None,
    control: Sequence[Any] = (),
) -> Callable[[Callable[..., Any]], Stage]: ...


def stage(
    handler: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    capacity: float = DEFAULT_CAPACITY,
    workers: Workers = 1,
    batch: int | None = None,
    blocking: bool | None = None,
    on_error: OnError = "log",
    init: Hook | Sequence[Hook] = (),
    close: Hook | Sequence[Hook] = (),
    admission: Policy | None = None,
    on_refuse: OnRefuse = "wait",
    overflow: Overflow = "refuse",
    order: Order = "fifo",
    deadline: QueueDeadline | None = None,
    control: Sequence[Any] = (),
) -> Stage | Callable[[Callable[..., Any]], Stage]:
    """Declare a stage, as ``@aseda.stage`` or ``@aseda.stage(option=...)``.

    Args:
        handler: an ``async def`` (runs on the event loop) or a plain ``def`` (runs on the
            stage's threads). A per-event handler takes one event; with ``batch`` it takes a
            list and returns ``None`` or one output per event.
        name: the stage's name in its graph; defaults to the handler's ``__name__``.
        capacity: the most events the queue holds (default 1024). ``math.inf`` makes it
            unbounded, which is never the default.
        workers: ``n``, ``(min, max)`` or ``(min, initial, max)``; the pool starts at
            ``initial`` (``min`` if not given) and can be resized within bounds while running.
        batch: give the handler lists of up to this many events, taking only what is queued
            (a batch never waits to fill).
        blocking: run on threads. Implied by a plain ``def``; an error for ``async def``.
        on_error: what a handler exception does: ``"log"`` (log, count, drop; the default),
            ``"fail"`` (fail the whole graph), or ``aseda.DeadLetter(name)``. A ``call()``
            caller receives the exception under every policy (unless, with fan-out, another
            copy of its event produced a value).
        init: hook(s) run before the stage starts (open a pool); see :meth:`Stage.on_init`.
        close: hook(s) run after it stops (close the pool); see :meth:`Stage.on_close`.
        admission: a policy run on every event offered to the queue, in the sender's context:
            ``aseda.Threshold``, ``TokenBucket``, ``Credits``, ``PerClass`` or any callable
            ``(event, stage) -> None | Refusal | reason``. Swappable while running.
        on_refuse: what a refused event becomes: ``"wait"`` (backpressure, the default),
            ``"shed"`` (dropped and counted; ``call()`` and ``send()`` raise ``Rejected``),
            ``aseda.Degrade(handler)`` or ``aseda.Redirect(stage)``. ``send()`` and ``call()``
            may override it per event.
        overflow: for a full queue, ``"refuse"`` the newest event (the default) or
            ``"drop_oldest"`` (admit it and shed the oldest queued one).
        order: ``"fifo"`` (the default) or ``"adaptive_lifo"`` / ``aseda.AdaptiveLIFO(n)``:
            newest first while ``n`` or more events are queued.
        deadline: an ``aseda.QueueDeadline``: shed events that waited too long in a queue
            that stays overloaded (CoDel), instead of serving them late.
        control: feedback controllers for this stage (worker pool, batching, overload);
            see ``graph.run(control=...)`` for graph-wide defaults.

    Raises:
        ConfigError: an option is invalid.
        GraphError: the handler's kind does not fit (``async def`` with ``blocking=True``...).
    """
    options: dict[str, Any] = dict(
        name=name,
        capacity=capacity,
        workers=workers,
        batch=batch,
        blocking=blocking,
        on_error=on_error,
        init=init,
        close=close,
        admission=admission,
        on_refuse=on_refuse,
        overflow=overflow,
        order=order,
        deadline=deadline,
        control=control,
    )
    if handler is not None:
        return Stage(handler, **options)

    def decorate(fn: Callable[..., Any]) -> Stage:
        return Stage(fn, **options)

    return decorate
