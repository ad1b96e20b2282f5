"""SEDA's controllers, and faster ones: pure state machines from observations to actions.

Each class here implements :class:`aseda._control.Controller`: it is fed one
:class:`~aseda._control.Observation` of its stage per sampling period and returns the
:class:`~aseda._control.Action` objects to apply. None reads a clock, starts a task or does
I/O; time is the observation's ``time`` and ``interval``, and the only randomness (the worker
pool's thrashing back-off) comes from an injectable ``random.Random``. So every decision can
be replayed from a list of observations.

- :class:`WorkerPool`: grows a stage's pool while its queue builds and shrinks it when workers
  stay idle; ``mode="seda"`` is the original (+1 every 4th check), ``mode="little"`` sizes the
  pool by Little's law in one or two periods.
- :class:`Batching`: finds the smallest batch size that keeps the throughput (SEDA's batching
  controller, with a float factor so it can grow from 1).
- :class:`USITS`: the response-time overload controller of Welsh & Culler (USITS 2003), setting
  a token bucket's rate (one per class) from the 90th-percentile response time.
- :class:`AIMD`: a faster overload controller with the same actuator: a delay signal taken
  every period (percentile and queue length), a cut proportional to the overshoot from the
  observed throughput, and additive increase.
- :class:`Gradient`: Netflix's Gradient2 on a concurrency limit (``"credits"`` actions).

:func:`overload_controller` builds an overload controller by name.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal

from ._control import Action, Controller, Observation
from ._errors import ConfigError

__all__ = [
    "AIMD",
    "OVERLOAD_CONTROLLERS",
    "Batching",
    "Gradient",
    "USITS",
    "WorkerPool",
    "overload_controller",
]


# Parameter checks ------------------------------------------------------------------------


def _real(
    value: object,
    what: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite float in the given range, or raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be finite, not {value!r}")
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high:g}")
        raise ConfigError(f"{what} must be {' and '.join(parts)}, not {value!r}")
    return number


def _whole(value: object, what: str, *, low: int = 1) -> int:
    """Return ``value`` as an int >= ``low`` (a whole float is accepted), or raise."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not (math.isfinite(value) and value == int(value)))
    ):
        raise ConfigError(f"{what} must be a whole number, not {value!r}")
    if value < low:
        raise ConfigError(f"{what} must be >= {low}, not {value!r}")
    return int(value)


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{what} must be True or False, not {value!r}")
    return value


def _classes(value: object, what: str) -> tuple[Hashable, ...] | None:
    """Validate a class order (lowest priority first)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"{what} must be a sequence of classes, lowest first, not {value!r}")
    order = tuple(value)
    if not order:
        raise ConfigError(f"{what} must name at least one class")
    try:
        distinct = len(set(order)) == len(order)
    except TypeError:
        raise ConfigError(f"{what} must hold hashable classes, not {value!r}") from None
    if not distinct:
        raise ConfigError(f"{what} must list each class once, not {value!r}")
    return order


# Formatting for reasons ------------------------------------------------------------------


def _secs(seconds: float) -> str:
    """A duration for humans: ``1.8 s``, ``250 ms``, ``40 us``."""
    if math.isinf(seconds):
        return "inf s"
    if seconds >= 1 or seconds == 0:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def _per_s(rate: float) -> str:
    return f"{rate:.3g}/s"


def _cls(cls: Hashable | None) -> str:
    return "" if cls is None else f"class {cls!r} "


def _params_repr(obj: object, params: dict[str, object]) -> str:
    inner = ", ".join(f"{key}={value!r}" for key, value in params.items())
    return f"{type(obj).__name__}({inner})"


def _percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``samples`` (nan if none), exactly.

    The smallest sample with at least ``q`` % of them at or below it: the definition
    :class:`aseda._histogram.LatencyHistogram` uses, without its bucket rounding (a period's
    samples are few, and an exact figure reads better in a reason).
    """
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(len(ordered) * q / 100 - 1e-9)) - 1]


#: A period shorter than this (seconds) carries no rate: counts over it are not divided.
_MIN_INTERVAL = 1e-6


def _per_second(count: float, seconds: float) -> float | None:
    """``count / seconds``, or None when the period is too short to measure a rate."""
    return count / seconds if seconds >= _MIN_INTERVAL else None


def _whole_up(value: float, cap: int) -> int:
    """``ceil(value)`` (forgiving float noise), at most ``cap``."""
    return cap if not value < cap else math.ceil(value - 1e-9)


def _ewma(old: float | None, new: float, weight_new: float) -> float:
    return new if old is None else weight_new * new + (1 - weight_new) * old


# WorkerPool ------------------------------------------------------------------------------


class WorkerPool:
    """SEDA's thread-pool controller, plus a Little's-law mode that sizes the pool at once.

    Growth. ``mode="seda"`` (the original): every ``check_every``-th observation (4), if the
    queue holds ``threshold`` events or more, add one worker. ``mode="little"`` (default): on
    any observation whose queue holds ``threshold`` or more, go straight to the size Little's
    law asks for: ``arrival rate x mean service time / utilization`` workers are busy on
    average, plus ``queue x mean service time / drain_time`` to work off the backlog. If that
    is no more than the pool has, the pool grows by one only if the queue grew since the
    last observation (the estimate falls short), and not at all while the backlog drains.
    Arrivals are the period's and the service time a short average (``0.5 old + 0.5 new``),
    so a pool reaches its size in one or two periods instead of one worker per four checks.

    Idle shrink. Only observations are available, so a worker counts as idle while the pool
    has spare workers (``workers - busy > 0``; for a batching stage ``busy`` events fill
    ``ceil(busy / batch)`` workers). Once spare workers have been seen continuously for
    ``idle_timeout`` seconds of observation time (the original: a thread idle for 5 s exits),
    one worker is removed per period while the pool is above its floor and spare workers
    remain. The floor is the minimum; in ``"little"`` mode also the workers Little's law says
    are busy on average (smoothed), so a pool is not shrunk into the next queue build-up.

    Thrashing (``thrashing=True``). ``"seda"`` mode, as the original: the throughput
    (completions/s) is smoothed as ``0.3 new + 0.7 old``; every ``thrash_every``-th
    observation (10) the best ``(workers, throughput)`` is kept, and if the throughput fell
    below the best while the pool is larger than the best's size, the pool is reset to the
    best size minus a random ``0..thrash_backoff`` (3). (The guard "while larger" is added: a
    throughput that fell because the load fell is not thrashing.) ``"little"`` mode jumps
    past sizes the original would have measured one by one, so it measures per size instead:
    while detection is on, growth at most doubles the pool per period; the throughput of each
    period that ran saturated (queue over the threshold at both ends) at an unchanged size is
    kept per size (``0.5 old + 0.5 new``); when the current size serves ``thrash_tolerance``
    (5 %) less than a smaller measured size, the pool goes back to the best measured size,
    which then caps growth. The table and the cap are forgotten after ``thrash_memory``
    seconds (60), so a service that changed is probed again.

    Bounds: every decision is inside ``[min_workers, max_workers]`` intersected with the
    stage's declared ``[workers_min, workers_max]``; a pool found outside is brought back.

    Args:
        mode: ``"little"`` (default) or ``"seda"`` (the original, for comparison).
        threshold: queue length that triggers growth. The original used 100 (papers) or 1000
            (code) for threads sampled every 2 s; an asyncio worker's events take micro- to
            milliseconds and the runtime samples far more often, so a queue of 8 that is
            still there at a sample already means every worker is busy and events wait for
            several service times. Default 8.
        check_every: ``"seda"`` mode grows on every n-th observation only (4).
        idle_timeout: seconds of continuously spare workers before one is removed (5, the
            papers' value; the code used 1).
        min_workers: lower bound (default: the stage's ``workers_min``).
        max_workers: upper bound (default: the stage's ``workers_max``; the papers capped
            threads at 20).
        utilization: ``"little"`` mode: the busy fraction the pool is sized for, in (0, 1]
            (0.8: a fifth spare, so random arrivals do not queue for long).
        drain_time: ``"little"`` mode: seconds in which the backlog should be worked off (1).
        thrashing: detect thrashing and back off (off by default, as in the original).
        thrash_every: ``"seda"`` mode: observations between thrashing checks (10).
        thrash_backoff: ``"seda"`` mode: the back-off subtracts a random 0..n workers from the
            best size (3).
        thrash_tolerance: ``"little"`` mode: the throughput loss that counts as thrashing
            (0.05).
        thrash_memory: ``"little"`` mode: seconds after which the per-size throughputs and
            the cap are forgotten (60).
        smoothing: weight of the new throughput sample (0.3).
        seed: an int seed or a ``random.Random`` for the back-off (default: unseeded).
    """

    name: str = "workers"

    def __init__(
        self,
        *,
        mode: Literal["little", "seda"] = "little",
        threshold: int = 8,
        check_every: int = 4,
        idle_timeout: float = 5.0,
        min_workers: int | None = None,
        max_workers: int | None = None,
        utilization: float = 0.8,
        drain_time: float = 1.0,
        thrashing: bool = False,
        thrash_every: int = 10,
        thrash_backoff: int = 3,
        thrash_tolerance: float = 0.05,
        thrash_memory: float = 60.0,
        smoothing: float = 0.3,
        seed: int | random.Random | None = None,
    ) -> None:
        if mode not in ("little", "seda"):
            raise ConfigError(f"WorkerPool mode must be 'little' or 'seda', not {mode!r}")
        self.mode = mode
        self.threshold = _whole(threshold, "WorkerPool threshold")
        self.check_every = _whole(check_every, "WorkerPool check_every")
        self.idle_timeout = _real(idle_timeout, "WorkerPool idle_timeout", low=0, low_open=True)
        self.min_workers = (
            None if min_workers is None else _whole(min_workers, "WorkerPool min_workers", low=0)
        )
        self.max_workers = (
            None if max_workers is None else _whole(max_workers, "WorkerPool max_workers")
        )
        if (
            self.min_workers is not None
            and self.max_workers is not None
            and self.min_workers > self.max_workers
        ):
            raise ConfigError(
                f"WorkerPool min_workers {self.min_workers} exceeds max_workers {self.max_workers}"
            )
        self.utilization = _real(
            utilization, "WorkerPool utilization", low=0, high=1, low_open=True
        )
        self.drain_time = _real(drain_time, "WorkerPool drain_time", low=0, low_open=True)
        self.thrashing = _flag(thrashing, "WorkerPool thrashing")
        self.thrash_every = _whole(thrash_every, "WorkerPool thrash_every")
        self.thrash_backoff = _whole(thrash_backoff, "WorkerPool thrash_backoff", low=0)
        self.thrash_tolerance = _real(
            thrash_tolerance, "WorkerPool thrash_tolerance", low=0, high=1, high_open=True
        )
        self.thrash_memory = _real(thrash_memory, "WorkerPool thrash_memory", low=0, low_open=True)
        self.smoothing = _real(smoothing, "WorkerPool smoothing", low=0, high=1, low_open=True)
        if seed is None or isinstance(seed, random.Random):
            self._rng = seed if seed is not None else random.Random()
        elif isinstance(seed, int) and not isinstance(seed, bool):
            self._rng = random.Random(seed)
        else:
            raise ConfigError(f"WorkerPool seed must be an int or a random.Random, not {seed!r}")
        self._checks = 0
        self._idle_since: float | None = None
        self._throughput: float | None = None
        self._best: tuple[int, float] | None = None
        self._ceiling: int | None = None
        self._service: float | None = None
        self._arrival_rate: float | None = None
        self._last_queue: int | None = None
        self._last_workers: int | None = None
        self._by_size: dict[int, float] = {}
        self._by_size_since: float | None = None

    def __repr__(self) -> str:
        return _params_repr(
            self,
            {
                "mode": self.mode,
                "threshold": self.threshold,
                "idle_timeout": self.idle_timeout,
                "min_workers": self.min_workers,
                "max_workers": self.max_workers,
                "thrashing": self.thrashing,
            },
        )

    def _bounds(self, obs: Observation) -> tuple[int, int]:
        high = (
            obs.workers_max if self.max_workers is None else min(self.max_workers, obs.workers_max)
        )
        low = (
            obs.workers_min if self.min_workers is None else max(self.min_workers, obs.workers_min)
        )
        return min(low, high), high

    def _needed(self, arrival_rate: float, service: float) -> float:
        return arrival_rate * service / self.utilization

    def observe(self, observation: Observation) -> list[Action]:
        """Take one period's observation; return at most one ``"workers"`` action."""
        actions = self._decide(observation)
        # The size the next period runs at (if the runtime applies the action at once).
        self._last_workers = int(actions[-1].value) if actions else observation.workers
        self._last_queue = observation.queue_length
        return actions

    def _decide(self, obs: Observation) -> list[Action]:
        self._checks += 1
        low, high = self._bounds(obs)
        workers = obs.workers
        arrival_rate = _per_second(obs.arrivals, obs.interval)
        throughput = _per_second(obs.completions, obs.interval)
        if arrival_rate is not None and throughput is not None:
            self._arrival_rate = _ewma(self._arrival_rate, arrival_rate, 0.5)
            self._throughput = _ewma(self._throughput, throughput, self.smoothing)
        if obs.service_samples:
            mean = math.fsum(obs.service_samples) / len(obs.service_samples)
            self._service = _ewma(self._service, mean, 0.5)

        if not low <= workers <= high:
            self._idle_since = None
            target = min(max(workers, low), high)
            return [
                Action(
                    "workers",
                    target,
                    f"{workers} workers outside the bounds [{low}, {high}]: "
                    f"{workers} -> {target} workers",
                )
            ]

        if self.thrashing:
            if self.mode == "seda":
                action = (
                    self._thrash(workers, low) if self._checks % self.thrash_every == 0 else None
                )
            else:
                saturated = (
                    throughput is not None
                    and workers == self._last_workers
                    and obs.queue_length >= self.threshold
                    and (self._last_queue or 0) >= self.threshold
                )
                action = self._thrash_little(
                    obs.time, workers, low, throughput if saturated else None
                )
            if action is not None:
                self._idle_since = None
                return [action]

        if obs.queue_length >= self.threshold:
            self._idle_since = None
            return self._grow(obs, workers, high, self._last_queue, arrival_rate)
        return self._shrink(obs, workers, low)

    def _thrash(self, workers: int, low: int) -> Action | None:
        throughput = self._throughput
        if throughput is None:
            return None
        if self._best is None or throughput > self._best[1]:
            self._best = (workers, throughput)
            return None
        best_workers, best = self._best
        if throughput >= best or workers <= best_workers:
            return None
        target = max(low, best_workers - self._rng.randint(0, self.thrash_backoff))
        if target >= workers:
            return None
        return Action(
            "workers",
            target,
            f"thrashing: throughput {_per_s(throughput)} < best {_per_s(best)} at "
            f"{best_workers} workers: {workers} -> {target} workers",
        )

    def _thrash_little(
        self, now: float, workers: int, low: int, throughput: float | None
    ) -> Action | None:
        if self._by_size_since is None or now - self._by_size_since >= self.thrash_memory:
            self._by_size.clear()
            self._ceiling = None
            self._by_size_since = now
        if throughput is None:
            return None
        here = self._by_size[workers] = _ewma(self._by_size.get(workers), throughput, 0.5)
        smaller = [size for size in self._by_size if size < workers]
        if not smaller:
            return None
        best = max(smaller, key=lambda size: self._by_size[size])
        if here >= (1 - self.thrash_tolerance) * self._by_size[best]:
            return None
        self._ceiling = target = max(low, best)
        return Action(
            "workers",
            target,
            f"thrashing: throughput {_per_s(here)} at {workers} workers < "
            f"{_per_s(self._by_size[best])} at {best}: {workers} -> {target} workers",
        )

    def _grow(
        self,
        obs: Observation,
        workers: int,
        high: int,
        last_queue: int | None,
        arrival_rate: float | None,
    ) -> list[Action]:
        if self.mode == "seda":
            if self._checks % self.check_every or workers >= high:
                return []
            return [
                Action(
                    "workers",
                    workers + 1,
                    f"queue {obs.queue_length} >= {self.threshold} at check {self._checks} "
                    f"(every {self.check_every}th): {workers} -> {workers + 1} workers",
                )
            ]
        ceiling = high if self._ceiling is None else min(high, self._ceiling)
        if workers >= ceiling:
            return []
        service = self._service
        grew = last_queue is None or obs.queue_length > last_queue
        if service is None or arrival_rate is None:
            target = workers + 1
            why = "no service time measured yet" if service is None else "no rate measured"
        else:
            busy = self._needed(arrival_rate, service)
            backlog = obs.queue_length * service / self.drain_time
            target = _whole_up(busy + backlog, ceiling)
            why = (
                f"{_per_s(arrival_rate)} x {_secs(service)} / "
                f"{self.utilization:g} = {busy:.3g} workers + backlog {backlog:.3g}"
            )
            if target <= workers:
                if not grew:
                    return []  # big enough: the backlog is draining
                target = workers + 1
                why += ", yet the queue grows"
        if self.thrashing:
            target = min(target, 2 * workers)  # measure sizes on the way (see thrashing)
        target = min(target, ceiling)
        return [
            Action(
                "workers",
                target,
                f"queue {obs.queue_length} >= {self.threshold}, {why}: "
                f"{workers} -> {target} workers",
            )
        ]

    def _shrink(self, obs: Observation, workers: int, low: int) -> list[Action]:
        busy = obs.busy if not obs.batch or obs.batch <= 1 else math.ceil(obs.busy / obs.batch)
        if workers - busy <= 0:
            self._idle_since = None
            return []
        if self._idle_since is None:
            self._idle_since = obs.time
            return []
        idle_for = obs.time - self._idle_since
        floor = low
        if self.mode == "little" and self._service is not None and self._arrival_rate is not None:
            floor = max(low, _whole_up(self._needed(self._arrival_rate, self._service), workers))
        if idle_for < self.idle_timeout or workers <= floor:
            return []
        return [
            Action(
                "workers",
                workers - 1,
                f"{workers - busy} spare workers for {_secs(idle_for)} >= "
                f"{_secs(self.idle_timeout)}: {workers} -> {workers - 1} workers",
            )
        ]


# Batching --------------------------------------------------------------------------------


class Batching:
    """SEDA's batching controller: the smallest batch size that keeps the throughput.

    Every window (``window`` observations, 1 by default) the throughput (completions/s) is
    measured and smoothed as ``0.7 old + 0.3 new``; so is the offered load (arrivals and
    refusals per second). The batching factor is a float; the batch emitted is
    ``round(factor)``, clamped to ``[batch_min, batch_max]``, and only when that integer
    differs from the batch in force. The original kept the factor as an int, so ``x 1.2``
    could never grow from 1 to 4 (``int(1 * 1.2) == 1``); a float grows 1, 1.2, 1.44, 1.73
    (emits 2), ...

    - Start, and every ``check_every``-th window (5) on a sudden change of the throughput
      against the best, or of the offered load against the load when the search started
      (below ``sudden_low`` (0.2x) or at least ``sudden_high`` (2x)): reset the factor to the
      maximum, restart the smoothers and the best from this window, and decrease.
    - Decreasing: divide the factor by ``step`` (1.2) each window until the throughput falls
      ``drop`` (10 %) below the best, then increase.
    - Increasing: multiply by ``step`` each window until the throughput is within ``recover``
      (2 %) of the best, then decrease again from there.

    Two additions over the original keep it from sticking: the best throughput is re-anchored
    to the current one when the search turns from increasing to decreasing, and when it
    reaches the maximum without recovering (a best measured while a backlog drained cannot be
    reached again). With ``queue_signal`` (default), a queue that grew over the window and
    holds more than a full batch per worker also counts as "throughput too low": the load
    exceeds what this batch size serves, even before the smoothed throughput shows it.

    Args:
        window: observations per measurement window (1).
        smoothing: weight of the new window's throughput (0.3).
        check_every: windows between sudden-change checks (5).
        sudden_low: a throughput or load below this fraction of the reference is sudden (0.2).
        sudden_high: at or above this multiple it is sudden (2.0).
        step: factor by which the batching factor moves each window (1.2).
        drop: decreasing stops when throughput falls this fraction below the best (0.1).
        recover: increasing stops within this fraction of the best (0.02).
        batch_min: smallest batch emitted (1).
        batch_max: largest batch emitted (default: the stage's ``batch_max``; if neither is
            known, the batch in force).
        queue_signal: also treat a growing, standing queue as a throughput drop (True).
    """

    name: str = "batching"

    def __init__(
        self,
        *,
        window: int = 1,
        smoothing: float = 0.3,
        check_every: int = 5,
        sudden_low: float = 0.2,
        sudden_high: float = 2.0,
        step: float = 1.2,
        drop: float = 0.1,
        recover: float = 0.02,
        batch_min: int = 1,
        batch_max: int | None = None,
        queue_signal: bool = True,
    ) -> None:
        self.window = _whole(window, "Batching window")
        self.smoothing = _real(smoothing, "Batching smoothing", low=0, high=1, low_open=True)
        self.check_every = _whole(check_every, "Batching check_every")
        self.sudden_low = _real(
            sudden_low, "Batching sudden_low", low=0, high=1, low_open=True, high_open=True
        )
        self.sudden_high = _real(sudden_high, "Batching sudden_high", low=1, low_open=True)
        self.step = _real(step, "Batching step", low=1, low_open=True)
        self.drop = _real(drop, "Batching drop", low=0, high=1, low_open=True, high_open=True)
        self.recover = _real(recover, "Batching recover", low=0, high=1, high_open=True)
        if self.recover >= self.drop:
            raise ConfigError(
                f"Batching recover ({self.recover:g}) must be smaller than drop ({self.drop:g}),"
                " or the search never settles"
            )
        self.batch_min = _whole(batch_min, "Batching batch_min")
        self.batch_max = None if batch_max is None else _whole(batch_max, "Batching batch_max")
        if self.batch_max is not None and self.batch_max < self.batch_min:
            raise ConfigError(
                f"Batching batch_min {self.batch_min} exceeds batch_max {self.batch_max}"
            )
        self.queue_signal = _flag(queue_signal, "Batching queue_signal")
        self.factor: float | None = None
        self.direction: Literal["down", "up"] = "down"
        self._windows = 0
        self._best = 0.0
        self._throughput: float | None = None
        self._load: float | None = None
        self._load_ref = 0.0
        self._last_queue: int | None = None
        self._acc_completions = 0
        self._acc_offered = 0
        self._acc_interval = 0.0
        self._acc_n = 0

    def __repr__(self) -> str:
        return _params_repr(
            self,
            {
                "window": self.window,
                "step": self.step,
                "batch_min": self.batch_min,
                "batch_max": self.batch_max,
                "factor": None if self.factor is None else round(self.factor, 3),
                "direction": self.direction,
            },
        )

    def observe(self, observation: Observation) -> list[Action]:
        """Take one period's observation; return at most one ``"batch"`` action."""
        obs = observation
        if obs.batch is None:
            return []  # not a batching stage
        high = self.batch_max
        if obs.batch_max is not None:
            high = obs.batch_max if high is None else min(high, obs.batch_max)
        if high is None:
            high = max(obs.batch, self.batch_min)
        low = min(self.batch_min, high)

        self._acc_completions += obs.completions
        self._acc_offered += obs.arrivals + obs.refused
        self._acc_interval += max(obs.interval, 0.0)
        self._acc_n += 1
        if self._acc_n < self.window:
            return []
        elapsed = self._acc_interval
        completions, offered = self._acc_completions, self._acc_offered
        self._acc_completions = self._acc_offered = self._acc_n = 0
        self._acc_interval = 0.0
        throughput = _per_second(completions, elapsed)
        load = _per_second(offered, elapsed)
        if throughput is None or load is None:
            return []

        self._windows += 1
        growing = (
            self.queue_signal
            and self._last_queue is not None
            and obs.queue_length > self._last_queue
            and obs.queue_length > obs.batch * max(obs.workers, 1)
        )
        self._last_queue = obs.queue_length

        if self.factor is None:
            return self._reset(obs.batch, low, high, throughput, load, "first window")
        smoothed = _ewma(self._throughput, throughput, self.smoothing)
        smoothed_load = _ewma(self._load, load, self.smoothing)
        self._throughput, self._load = smoothed, smoothed_load
        best = self._best = max(self._best, smoothed)

        if self._windows % self.check_every == 0:
            change = self._sudden(smoothed, best, "throughput") or self._sudden(
                smoothed_load, self._load_ref, "load"
            )
            if change:
                return self._reset(obs.batch, low, high, throughput, load, change)

        factor = min(max(self.factor, low), high)
        if self.direction == "down":
            if smoothed < (1 - self.drop) * best or growing:
                self.direction = "up"
                factor = min(factor * self.step, high)
                why = (
                    f"queue grew to {obs.queue_length}"
                    if growing
                    else f"throughput {_per_s(smoothed)} < {1 - self.drop:.0%} of best "
                    f"{_per_s(best)}"
                )
                why += ", increasing"
            else:
                factor = max(factor / self.step, low)
                why = f"throughput {_per_s(smoothed)} holds (best {_per_s(best)}), decreasing"
        elif smoothed >= (1 - self.recover) * best and not growing:
            self.direction = "down"
            self._best = smoothed
            self._load_ref = smoothed_load
            why = f"throughput {_per_s(smoothed)} within {self.recover:.0%} of best, settled"
        elif (
            smoothed >= (1 - self.recover) * smoothed_load
            and not growing
            and obs.queue_length <= obs.batch * max(obs.workers, 1)
        ):
            # Serving all that is offered, with no backlog: a best measured while a backlog
            # drained can be out of reach, and growing further would only add latency.
            # (The load reference stays: a sudden change of load must still reset.)
            self.direction = "down"
            self._best = smoothed
            why = f"throughput {_per_s(smoothed)} serves the offered load, settled"
        elif factor >= high:
            self.direction = "down"
            self._best = smoothed
            self._load_ref = smoothed_load
            why = f"at the maximum with throughput {_per_s(smoothed)}, settled"
        else:
            factor = min(factor * self.step, high)
            why = f"throughput {_per_s(smoothed)} below best {_per_s(best)}, increasing"
        self.factor = factor
        return self._emit(obs.batch, low, high, why)

    def _sudden(self, value: float, reference: float, what: str) -> str | None:
        if reference <= 0:
            return None
        if value < self.sudden_low * reference or value >= self.sudden_high * reference:
            return f"sudden change: {what} {_per_s(value)} vs {_per_s(reference)}"
        return None

    def _reset(
        self, batch: int, low: int, high: int, throughput: float, load: float, why: str
    ) -> list[Action]:
        self.factor = float(high)
        self.direction = "down"
        self._throughput = self._best = throughput
        self._load = self._load_ref = load
        return self._emit(batch, low, high, f"{why}, reset to the maximum")

    def _emit(self, batch: int, low: int, high: int, why: str) -> list[Action]:
        assert self.factor is not None
        target = min(max(math.floor(self.factor + 0.5), low), high)
        if target == batch:
            return []
        return [Action("batch", target, f"{why}: batch {batch} -> {target}")]


# Overload controllers (token-bucket rate) --------------------------------------------------


class _RateControl:
    """What the rate controllers share: classes, rates, bounds, degrade, actions."""

    name: str = "rate"

    def __init__(
        self,
        target: float,
        *,
        percentile: float,
        rate_min: float,
        rate_max: float,
        initial_rate: float | None,
        classes: Sequence[Hashable] | None,
        degrade: bool,
        degrade_hold: int,
    ) -> None:
        what = type(self).__name__
        self.target = _real(target, f"{what} target", low=0, low_open=True)
        self.percentile = _real(percentile, f"{what} percentile", low=0, high=100, low_open=True)
        self.rate_min = _real(rate_min, f"{what} rate_min", low=0, low_open=True)
        self.rate_max = _real(rate_max, f"{what} rate_max", low=0, low_open=True)
        if self.rate_min > self.rate_max:
            raise ConfigError(
                f"{what} rate_min {self.rate_min:g} exceeds rate_max {self.rate_max:g}"
            )
        self.initial_rate = (
            None
            if initial_rate is None
            else _real(initial_rate, f"{what} initial_rate", low=self.rate_min, high=self.rate_max)
        )
        self.classes = _classes(classes, f"{what} classes")
        self.degrade = _flag(degrade, f"{what} degrade")
        self.degrade_hold = _whole(degrade_hold, f"{what} degrade_hold")
        self.rates: dict[Hashable, float] = {}
        self.degraded = False
        self._over_degraded = 0
        self._under = 0

    def _order(self, obs: Observation) -> tuple[Hashable, ...]:
        """The classes, lowest priority first."""
        if self.classes is not None:
            return self.classes
        if not obs.rates:
            return tuple(self.rates) or (None,)
        keys = list(obs.rates)
        try:
            return tuple(sorted(keys))  # type: ignore[type-var]
        except TypeError:
            return tuple(keys)

    def _sync(self, obs: Observation) -> tuple[Hashable, ...]:
        """Take the rates in force from the observation (falling back on ours)."""
        order = self._order(obs)
        start = self.initial_rate if self.initial_rate is not None else self.rate_max
        self.rates = {
            cls: self._clamp(obs.rates.get(cls, self.rates.get(cls, start))) for cls in order
        }
        return order

    def _clamp(self, rate: float) -> float:
        return min(max(rate, self.rate_min), self.rate_max)

    def _set(self, cls: Hashable, rate: float, why: str, actions: list[Action]) -> None:
        old, new = self.rates[cls], self._clamp(rate)
        if math.isclose(old, new, rel_tol=1e-9):
            return
        self.rates[cls] = new
        actions.append(
            Action("rate", new, f"{why}: {_cls(cls)}rate {old:.3g} -> {_per_s(new)}", cls)
        )

    def _degrade_over(self, why: str) -> list[Action] | None:
        """Over target: the degrade actions that replace a cut, or None to cut."""
        self._under = 0
        if not self.degrade:
            return None
        if not self.degraded:
            self.degraded = True
            self._over_degraded = 0
            return [Action("degrade", 1, f"{why}: degrade")]
        self._over_degraded += 1
        if self._over_degraded < self.degrade_hold:
            return []
        return None  # degrading alone is not enough: cut as well

    def _degrade_under(self, why: str) -> list[Action]:
        """Under target: stop degrading after ``degrade_hold`` updates in a row."""
        if not self.degraded:
            return []
        self._under += 1
        if self._under < self.degrade_hold:
            return []
        self.degraded = False
        self._under = 0
        return [Action("degrade", 0, f"{why} for {self.degrade_hold} updates: stop degrading")]

    def _common_repr(self) -> dict[str, object]:
        return {
            "target": self.target,
            "percentile": self.percentile,
            "rate_min": self.rate_min,
            "rate_max": self.rate_max,
            "classes": self.classes,
            "degrade": self.degrade,
        }


#: AIMD ignores rate differences within 2 % (a capacity estimate that wobbles).
_SLACK = 1.02

#: The original's additive-increase offset: ``rate += increase * (-err - 0.1)``.
_USITS_OFFSET = 0.1


class USITS(_RateControl):
    """The adaptive overload controller of Welsh & Culler (USITS 2003), as the reference.

    Response-time samples are collected across observations; every ``samples`` (100) samples
    or ``period`` (1 s) of observation time, whichever comes first, their ``percentile``
    (90th) is computed and smoothed, ``rt = alpha rt + (1 - alpha) new`` (``alpha`` 0.7).
    With ``err = (rt - target) / target``:

    - ``err > 0`` (over target): if any class of lower priority than the highest still has a
      rate above ``rate_min``, divide every such rate by ``class_cut`` (10); if none is left
      to cut, divide the highest class's rate by ``decrease`` (1.2). With one class (a plain
      token bucket) that is simply ``rate /= 1.2``.
    - ``err < -0.5`` (well under target): raise every class's rate additively by
      ``increase * (-err - 0.1)`` (``increase`` 2.0, so by 0.8 to 1.8 events/s per update).
    - Rates stay within ``[rate_min, rate_max]`` = ``[0.05, 5000]`` events/s.

    The original measured each class's own response time and cut the classes below the one
    over target; an observation carries one stage-wide sample list, so here the stage's
    percentile stands for every class, and the highest class is the one protected.

    With ``degrade=True``, going over target first emits ``Action("degrade", 1)`` instead of a
    cut; if the stage is still over target ``degrade_hold`` updates later, the rate is cut as
    well. ``Action("degrade", 0)`` follows ``degrade_hold`` updates in a row under target.

    No samples, no update: a stage that completes nothing is not judged.

    Args:
        target: the response-time target, seconds.
        percentile: which percentile is held to the target (90).
        samples: samples per update (100).
        period: seconds of observation time per update when fewer samples arrive (1).
        alpha: weight of the previous smoothed value (0.7).
        increase: additive increase per unit of error (2.0).
        increase_below: raise the rate when err is below this (-0.5).
        decrease: multiplicative decrease of the highest class (1.2).
        decrease_above: cut when err is above this (0).
        class_cut: divisor of the lower classes' rates (10).
        rate_min, rate_max: the rate range (0.05, 5000 events/s).
        initial_rate: rate assumed before the stage reports one (default ``rate_max``).
        classes: the classes, lowest priority first (default: the observed rates' keys,
            sorted; ``None`` is the key of a plain token bucket).
        degrade: degrade instead of cutting first (False).
        degrade_hold: updates before escalating, and under target before undegrading (3).
    """

    name: str = "usits"

    def __init__(
        self,
        target: float,
        *,
        percentile: float = 90.0,
        samples: int = 100,
        period: float = 1.0,
        alpha: float = 0.7,
        increase: float = 2.0,
        increase_below: float = -0.5,
        decrease: float = 1.2,
        decrease_above: float = 0.0,
        class_cut: float = 10.0,
        rate_min: float = 0.05,
        rate_max: float = 5000.0,
        initial_rate: float | None = None,
        classes: Sequence[Hashable] | None = None,
        degrade: bool = False,
        degrade_hold: int = 3,
    ) -> None:
        super().__init__(
            target,
            percentile=percentile,
            rate_min=rate_min,
            rate_max=rate_max,
            initial_rate=initial_rate,
            classes=classes,
            degrade=degrade,
            degrade_hold=degrade_hold,
        )
        self.samples = _whole(samples, "USITS samples")
        self.period = _real(period, "USITS period", low=0, low_open=True)
        self.alpha = _real(alpha, "USITS alpha", low=0, high=1, high_open=True)
        self.increase = _real(increase, "USITS increase", low=0, low_open=True)
        self.increase_below = _real(increase_below, "USITS increase_below", low=-1, high=0)
        self.decrease = _real(decrease, "USITS decrease", low=1, low_open=True)
        self.decrease_above = _real(decrease_above, "USITS decrease_above", low=0)
        self.class_cut = _real(class_cut, "USITS class_cut", low=1, low_open=True)
        self.rt: float | None = None
        self._samples: list[float] = []
        self._since: float | None = None

    def __repr__(self) -> str:
        return _params_repr(self, {**self._common_repr(), "samples": self.samples})

    def observe(self, observation: Observation) -> list[Action]:
        """Take one period's observation; return the rate and degrade actions of an update."""
        obs = observation
        order = self._sync(obs)
        if self._since is None:
            self._since = obs.time - obs.interval
        self._samples.extend(obs.response_samples)
        count = len(self._samples)
        if count == 0 or (count < self.samples and obs.time - self._since < self.period):
            return []
        measured = _percentile(self._samples, self.percentile)
        self._samples.clear()
        self._since = obs.time
        rt = self.rt = (
            measured if self.rt is None else self.alpha * self.rt + (1 - self.alpha) * measured
        )
        err = (rt - self.target) / self.target
        why = (
            f"p{self.percentile:g} {_secs(rt)} {'>' if err > 0 else '<='} target "
            f"{_secs(self.target)} (err {err:+.2f})"
        )
        actions: list[Action] = []
        if err > self.decrease_above:
            degrading = self._degrade_over(why)
            if degrading is not None:
                return degrading
            lower = [cls for cls in order[:-1] if self.rates[cls] > self.rate_min]
            for cls in lower:
                self._set(
                    cls, self.rates[cls] / self.class_cut, why + ", lower class first", actions
                )
            if not lower:
                top = order[-1]
                self._set(top, self.rates[top] / self.decrease, why, actions)
            return actions
        if err < 0:
            actions.extend(self._degrade_under(why))
        if err < self.increase_below:
            step = self.increase * (-err - _USITS_OFFSET)
            for cls in order:
                self._set(cls, self.rates[cls] + step, why, actions)
        return actions


class AIMD(_RateControl):
    """A fast delay-based overload controller: cut to the served rate, then add (CoDel-like).

    Decides on every observation, from two delay estimates: the ``percentile`` (90th) of the
    period's response samples, and the delay a newly admitted event will see, predicted
    from the queue: ``queue / capacity + mean service time`` (it rises the moment a spike
    fills the queue, a period before completed events show it). ``capacity`` is the
    throughput measured while a queue stood, smoothed ``0.5 old + 0.5 new``. The delay ``d``
    is the larger of the two.

    - ``d > target``: multiplicative decrease proportional to the overshoot, seeded from what
      the stage actually serves rather than from the current rate:
      ``rate = min(rate, capacity) * clamp(target / d, floor, backoff)`` (0.5, 0.9), minus the
      backlog that cannot be served within the target (``queue - capacity * (target -
      service)``) spread over ``drain_time`` (0.25 s). A 10x spike is thus met by one cut to
      about half the capacity, for as long as the backlog needs, instead of ``/ 1.2`` per
      second from wherever the rate was.
    - ``raise_below x target < d <= target`` (``raise_below`` 0.5): no increase; if the
      queue is still building (more arrivals than completions) while the rate exceeds
      ``backoff x capacity``, trim it to that, so the queue turns before it reaches the target.
    - ``d <= raise_below x target``, the bucket refused events (the rate binds) and the
      queue is not building: if the rate is below ``backoff x capacity`` jump back there
      (fast recovery after a cut: the stage served that much with a queue standing); else
      increase additively by ``increase`` (2 %) of the capacity per period, probing slowly
      for more. Changes within 2 % are ignored.
    - With classes (lowest priority first), a cut is taken from the lowest class down to
      ``rate_min`` before the next one is touched. An increase goes to the highest class
      refused in the period, up to 1.1 x its demand (``class_offered``), the rest to the next
      class down.
    - An idle stage (nothing queued, in service or finished) has no delay: refused events
      then raise the rate, so a cut that starved the stage is undone once it has drained.
    - Rates stay within ``[rate_min, rate_max]``.

    With ``degrade=True``: over target it first emits ``Action("degrade", 1)`` instead of a
    cut, escalating to cuts if still over target ``degrade_hold`` periods later, and emits
    ``Action("degrade", 0)`` after ``degrade_hold`` periods in a row under target.

    Args:
        target: the response-time target, seconds.
        percentile: which percentile of the period's samples is held to the target (90).
        backoff: the mildest cut, and the fast-recovery level (0.9 of capacity).
        floor: the deepest proportional cut (0.5).
        increase: additive increase per period, as a fraction of capacity (0.02).
        drain_time: seconds over which the excess backlog is drained (0.25).
        raise_below: the rate is raised only while the delay is under this fraction of the
            target (0.5).
        rate_min, rate_max: the rate range (0.05 and 1e6 events/s: asyncio stages can serve
            far more than the original's 5000/s).
        initial_rate: rate assumed before the stage reports one (default ``rate_max``).
        classes: the classes, lowest priority first (as for :class:`USITS`).
        degrade: degrade instead of cutting first (False).
        degrade_hold: periods before escalating, and under target before undegrading (3).
    """

    name: str = "aimd"

    def __init__(
        self,
        target: float,
        *,
        percentile: float = 90.0,
        backoff: float = 0.9,
        floor: float = 0.5,
        increase: float = 0.02,
        drain_time: float = 0.25,
        raise_below: float = 0.5,
        rate_min: float = 0.05,
        rate_max: float = 1e6,
        initial_rate: float | None = None,
        classes: Sequence[Hashable] | None = None,
        degrade: bool = False,
        degrade_hold: int = 3,
    ) -> None:
        super().__init__(
            target,
            percentile=percentile,
            rate_min=rate_min,
            rate_max=rate_max,
            initial_rate=initial_rate,
            classes=classes,
            degrade=degrade,
            degrade_hold=degrade_hold,
        )
        self.backoff = _real(backoff, "AIMD backoff", low=0, high=1, low_open=True, high_open=True)
        self.floor = _real(floor, "AIMD floor", low=0, high=self.backoff, low_open=True)
        self.increase = _real(increase, "AIMD increase", low=0, low_open=True)
        self.drain_time = _real(drain_time, "AIMD drain_time", low=0, low_open=True)
        self.raise_below = _real(raise_below, "AIMD raise_below", low=0, high=1)
        self.capacity: float | None = None
        self._service: float | None = None

    def __repr__(self) -> str:
        return _params_repr(
            self, {**self._common_repr(), "backoff": self.backoff, "floor": self.floor}
        )

    def observe(self, observation: Observation) -> list[Action]:
        """Take one period's observation; return the rate and degrade actions."""
        obs = observation
        order = self._sync(obs)
        served = _per_second(obs.completions, obs.interval)
        if served and (obs.queue_length > 0 or obs.busy >= obs.workers > 0):
            self.capacity = _ewma(self.capacity, served, 0.5)
        if obs.service_samples:
            self._service = math.fsum(obs.service_samples) / len(obs.service_samples)
        service = self._service or 0.0
        capacity = self.capacity or served

        delays: list[float] = []
        signals: list[str] = []
        if obs.response_samples:
            measured = _percentile(obs.response_samples, self.percentile)
            delays.append(measured)
            signals.append(f"p{self.percentile:g} {_secs(measured)}")
        idle = not obs.queue_length and not obs.busy
        if capacity and not idle:
            predicted = obs.queue_length / capacity + service
            delays.append(predicted)
            signals.append(f"queue {obs.queue_length} ({_secs(predicted)})")
        if not delays:
            if not idle:
                return []
            # Nothing finished, nothing waits: no delay at all. (Were the last service time
            # kept as the estimate, a deep cut that starves the stage would never be undone.)
            delays.append(0.0)
            signals.append("idle")
        delay = max(delays)
        signal = ", ".join(signals)
        total = math.fsum(self.rates.values())
        actions: list[Action] = []

        if delay > self.target:
            why = f"{signal} > target {_secs(self.target)}"
            degrading = self._degrade_over(why)
            if degrading is not None:
                return degrading
            factor = min(max(self.target / delay, self.floor), self.backoff)
            base = min(total, capacity) if capacity else total
            excess = 0.0
            if capacity:
                excess = max(0.0, obs.queue_length - capacity * max(self.target - service, 0.0))
            new_total = base * factor - excess / self.drain_time
            why += f", x{factor:.2f} of {_per_s(base)}"
            if excess:
                why += f", draining {excess:.3g} queued"
            self._cut(order, total - new_total, why, actions)
            return actions

        actions.extend(self._degrade_under(f"{signal} <= target {_secs(self.target)}"))
        building = obs.queue_length > 0 and obs.arrivals > obs.completions
        if delay > self.raise_below * self.target:
            # Near the target: no increase; a queue still building means the rate exceeds
            # what the stage serves, so trim it to just under the capacity now.
            if building and capacity and total > self.backoff * capacity * _SLACK:
                why = (
                    f"{signal} > {self.raise_below:g} x target {_secs(self.target)} and building, "
                    f"trim to {self.backoff:g} x {_per_s(capacity)}"
                )
                self._cut(order, total - self.backoff * capacity, why, actions)
            return actions
        if obs.refused <= 0 or building:
            # The rate does not bind (raising it changes nothing), or it already admits more
            # than the stage serves.
            return actions
        why = f"{signal} <= {self.raise_below:g} x target {_secs(self.target)}"
        if self.capacity and total * _SLACK < self.backoff * self.capacity:
            step = self.backoff * self.capacity - total
            why += f", fast recovery to {self.backoff:g} x {_per_s(self.capacity)}"
        else:
            step = self.increase * (capacity or total)
            why += ", additive increase"
        if len(order) > 1 and obs.class_refused:
            self._raise_by_priority(order, step, obs, why, actions)
            return actions
        for cls in order:
            self._set(cls, self.rates[cls] + step / len(order), why, actions)
        return actions

    def _raise_by_priority(
        self,
        order: Sequence[Hashable],
        step: float,
        obs: Observation,
        why: str,
        actions: list[Action],
    ) -> None:
        """Give ``step`` events/s to the highest classes that were refused, up to their demand.

        A class is raised only while it was refused; each takes at most what it offered
        (its demand, plus 10 %) before the next class down gets the rest, so a higher
        class is refused only once every lower one is held at the minimum.
        """
        for cls in reversed(order):  # highest priority first
            if step <= 0:
                break
            if obs.class_refused.get(cls, 0) <= 0:
                continue
            rate = self.rates[cls]
            offered = _per_second(obs.class_offered.get(cls, 0), obs.interval)
            demand = 1.1 * offered if offered is not None else math.inf
            give = min(step, max(demand - rate, 0.0)) if demand > rate else 0.0
            if cls == order[0]:
                give = step  # the lowest class refused takes what is left
            if give > 0:
                self._set(cls, rate + give, why, actions)
                step -= give

    def _cut(
        self, order: Sequence[Hashable], amount: float, why: str, actions: list[Action]
    ) -> None:
        """Take ``amount`` events/s off the rates, lowest class first."""
        for cls in order:
            if amount <= 0:
                break
            rate = self.rates[cls]
            take = min(amount, rate - self.rate_min)
            if take > 0:
                self._set(cls, rate - take, why, actions)
                amount -= take


# Gradient (concurrency limit) --------------------------------------------------------------


class Gradient:
    """Netflix's Gradient2 on a stage's concurrency limit (``"credits"`` actions).

    Each observation with response samples: ``short`` is their mean; ``long`` tracks it
    slowly, ``long += (short - long) / long_window`` (100 observations), and drifts down
    (``x 0.95``) while ``long > 2 x short`` so it follows a service that got faster. Then,
    unless the stage is application-limited (fewer than half the credits in use, counting
    queued and busy events), the limit moves:

    ``gradient = clamp(tolerance * long / short, 0.5, 1)`` (``tolerance`` 1.5: latency may rise
    50 % over the baseline before the limit falls), ``new = limit * gradient + queue_size``
    (4 events of headroom), ``limit = 0.8 limit + 0.2 new`` (``smoothing`` 0.2), clamped to
    ``[min_limit, max_limit]``. The integer limit is emitted when it changes.

    With a ``target`` (seconds), the ``percentile`` (90th) of the period's samples is also
    held to it: ``gradient = min(gradient, target / p90)``, and an over-target stage is
    judged even when application-limited.

    Args:
        target: optional response-time target, seconds.
        percentile: the percentile held to ``target`` (90).
        tolerance: allowed ratio of short to long latency (1.5).
        smoothing: weight of the new limit (0.2).
        queue_size: headroom added to the limit each step (4).
        initial_limit: the limit before any observation (20, as Gradient2).
        min_limit, max_limit: bounds of the limit (1, 1000).
        long_window: observations the long-term average spans (100).
    """

    name: str = "gradient"

    def __init__(
        self,
        target: float | None = None,
        *,
        percentile: float = 90.0,
        tolerance: float = 1.5,
        smoothing: float = 0.2,
        queue_size: float = 4,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 1000,
        long_window: int = 100,
    ) -> None:
        self.target = (
            None if target is None else _real(target, "Gradient target", low=0, low_open=True)
        )
        self.percentile = _real(percentile, "Gradient percentile", low=0, high=100, low_open=True)
        self.tolerance = _real(tolerance, "Gradient tolerance", low=1)
        self.smoothing = _real(smoothing, "Gradient smoothing", low=0, high=1, low_open=True)
        self.queue_size = _real(queue_size, "Gradient queue_size", low=0)
        self.min_limit = _whole(min_limit, "Gradient min_limit")
        self.max_limit = _whole(max_limit, "Gradient max_limit")
        if self.min_limit > self.max_limit:
            raise ConfigError(
                f"Gradient min_limit {self.min_limit} exceeds max_limit {self.max_limit}"
            )
        initial = _whole(initial_limit, "Gradient initial_limit")
        if not self.min_limit <= initial <= self.max_limit:
            raise ConfigError(
                f"Gradient initial_limit must be within [{self.min_limit}, {self.max_limit}],"
                f" not {initial_limit!r}"
            )
        self.long_window = _whole(long_window, "Gradient long_window")
        self.limit = float(initial)
        self.long: float | None = None

    def __repr__(self) -> str:
        return _params_repr(
            self,
            {
                "target": self.target,
                "tolerance": self.tolerance,
                "min_limit": self.min_limit,
                "max_limit": self.max_limit,
                "limit": round(self.limit),
            },
        )

    def observe(self, observation: Observation) -> list[Action]:
        """Take one period's observation; return at most one ``"credits"`` action."""
        obs = observation
        samples = obs.response_samples
        if not samples:
            return []
        short = math.fsum(samples) / len(samples)
        if short <= 0:
            return []
        long = self.long = (
            short if self.long is None else self.long + (short - self.long) / self.long_window
        )
        if long > 2 * short:
            long = self.long = long * 0.95
        over = False
        p = math.nan
        if self.target is not None:
            p = _percentile(samples, self.percentile)
            over = p > self.target
        old = self.limit
        if obs.queue_length + obs.busy < old / 2 and not over:
            return []
        gradient = self.tolerance * long / short
        if over and self.target is not None:
            gradient = min(gradient, self.target / p)
        gradient = min(max(gradient, 0.5), 1.0)
        new = old * gradient + self.queue_size
        limit = (1 - self.smoothing) * old + self.smoothing * new
        self.limit = min(max(limit, self.min_limit), self.max_limit)
        before, after = round(old), round(self.limit)
        if before == after:
            return []
        why = f"rt {_secs(short)} vs long-term {_secs(long)} (gradient {gradient:.2f})"
        if over and self.target is not None:
            why += f", p{self.percentile:g} {_secs(p)} > target {_secs(self.target)}"
        return [Action("credits", after, f"{why}: credits {before} -> {after}")]


# Factory ---------------------------------------------------------------------------------

#: Overload controllers by name, for :func:`overload_controller`.
OVERLOAD_CONTROLLERS: dict[str, type[USITS] | type[AIMD] | type[Gradient]] = {
    "aimd": AIMD,
    "gradient": Gradient,
    "usits": USITS,
}


def overload_controller(name: str, **params: Any) -> Controller:
    """Build an overload controller by name: ``"usits"``, ``"aimd"`` or ``"gradient"``.

    ``params`` are the class's constructor arguments (``target=`` first of all).

    Raises:
        ConfigError: for an unknown name (listing the valid ones), or parameters the
            controller does not take or rejects.
    """
    key = name.lower() if isinstance(name, str) else name
    try:
        cls = OVERLOAD_CONTROLLERS[key]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in sorted(OVERLOAD_CONTROLLERS))
        raise ConfigError(f"unknown overload controller {name!r}; choose one of {valid}") from None
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as error:
        raise ConfigError(f"overload controller {name!r}: {error}") from None
    controller: Controller = cls(**params)
    return controller
