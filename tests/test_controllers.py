"""Controllers, decided by hand: made-up observations in, actions out, no event loop.

The closed-loop tests feed a controller's actions back into a small model of a stage (a
deterministic single-server queue, a fluid worker pool, a batching stage) and read the next
observation from the model, as the runtime would sample the real stage.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
import random
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aseda
from aseda._control import Action, Controller, Observation
from aseda._controllers import (
    AIMD,
    OVERLOAD_CONTROLLERS,
    USITS,
    Batching,
    Gradient,
    WorkerPool,
    overload_controller,
)

BASE = Observation(
    stage="s",
    time=1.0,
    interval=1.0,
    queue_length=0,
    capacity=1024,
    arrivals=0,
    completions=0,
    refused=0,
    workers=1,
    workers_min=1,
    workers_max=64,
    busy=0,
    batch=None,
    batch_max=None,
)


def make(**changes: Any) -> Observation:
    """An observation: BASE with some fields changed."""
    return dataclasses.replace(BASE, **changes)


def only(actions: Sequence[Action], kind: str) -> list[Action]:
    return [a for a in actions if a.kind == kind]


def exact_p90(samples: Sequence[float]) -> float:
    """The 90th percentile by rank (0 without samples)."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


# Models --------------------------------------------------------------------------------------


class Server:
    """One FIFO server with a fixed service time behind a token bucket; arrivals are evenly
    spaced. Response time = queue wait + service, exactly, per event."""

    def __init__(self, capacity: float = 100.0, rate: float = 150.0, burst: float = 2.0) -> None:
        self.service = 1 / capacity
        self.rate, self.burst, self.tokens = rate, burst, burst
        self.now = self.refilled = self.next_arrival = self.free_at = 0.0
        self.pending: collections.deque[tuple[float, float, float]] = collections.deque()
        self.starts: list[float] = []  # start times of events not yet started or running
        self.first = 0  # index into starts of the first pending event

    def _refill(self, t: float) -> None:
        self.tokens = min(self.burst, self.tokens + (t - self.refilled) * self.rate)
        self.refilled = t

    def step(self, dt: float, offered: float) -> Observation:
        end = self.now + dt
        arrivals = refused = 0
        while self.next_arrival < end:
            t = self.next_arrival
            self._refill(t)
            if self.tokens >= 1 - 1e-9:
                self.tokens -= 1
                start = max(t, self.free_at)
                self.free_at = start + self.service
                self.pending.append((t, start, self.free_at))
                self.starts.append(start)
                arrivals += 1
            else:
                refused += 1
            self.next_arrival += 1 / offered
        samples = []
        while self.pending and self.pending[0][2] <= end + 1e-12:
            arrived, _, finished = self.pending.popleft()
            samples.append(finished - arrived)
            self.first += 1
        queue = len(self.starts) - bisect.bisect_right(self.starts, end, lo=self.first)
        busy = 1 if self.pending and self.pending[0][1] <= end else 0
        self.now = end
        return make(
            time=end,
            interval=dt,
            queue_length=queue,
            capacity=math.inf,
            arrivals=arrivals,
            completions=len(samples),
            refused=refused,
            workers_max=1,
            busy=busy,
            response_samples=tuple(samples),
            service_samples=(self.service,) * len(samples),
            rates={None: self.rate},
        )

    def apply(self, actions: Sequence[Action]) -> None:
        for action in only(actions, "rate"):
            self._refill(self.now)
            self.rate = action.value


def spike(
    controller: Controller,
    *,
    dt: float,
    rate: float = 150.0,
    before: float = 5.0,
    after: float = 10.0,
    low: float = 50.0,
    high: float = 500.0,
) -> tuple[float, list[tuple[float, float, float, int]]]:
    """Run a 10x step in offered load (capacity 100/s, starting at 50/s) under a controller.

    Returns the seconds after the step until the last period whose p90 exceeded 0.2 s (0 if
    none did), and (time, p90, rate, admitted) per period.
    """
    server = Server(rate=rate)
    trace = []
    periods = round(before / dt)
    for i in range(periods + round(after / dt)):
        observation = server.step(dt, low if i < periods else high)
        server.apply(controller.observe(observation))
        trace.append(
            (
                observation.time,
                exact_p90(observation.response_samples),
                server.rate,
                observation.arrivals,
            )
        )
    over = [t for t, p90, _, _ in trace if t > before + 1e-9 and p90 > 0.2]
    return (max(over) - before if over else 0.0), trace


class Pool:
    """A fluid worker pool: each worker serves ``per_worker`` events per period, and past
    ``knee`` workers every extra worker costs the pool ``loss`` events per period (thrashing).
    The queue holds ``capacity`` events; senders wait when it is full (backpressure)."""

    def __init__(
        self,
        workers: int = 1,
        *,
        per_worker: int = 10,
        dt: float = 0.1,
        knee: int | None = None,
        loss: int = 6,
        capacity: int = 10_000,
        workers_max: int = 64,
    ) -> None:
        self.workers, self.per_worker, self.dt = workers, per_worker, dt
        self.knee, self.loss, self.capacity, self.workers_max = knee, loss, capacity, workers_max
        self.queue = 0
        self.now = 0.0

    def served(self) -> int:
        w = self.workers
        if self.knee is None or w <= self.knee:
            return w * self.per_worker
        return max(self.per_worker, self.knee * self.per_worker - self.loss * (w - self.knee))

    def step(self, offered: int) -> Observation:
        """Run one period with ``offered`` events wanting in."""
        served = self.served()
        done = min(self.queue + offered, served)
        arrivals = min(offered, self.capacity - self.queue + done)
        self.queue = self.queue + arrivals - done
        self.now += self.dt
        service = self.workers * self.dt / served  # seconds per event per worker
        busy = self.workers if self.queue else min(self.workers, math.ceil(arrivals * service))
        return make(
            time=self.now,
            interval=self.dt,
            queue_length=self.queue,
            capacity=self.capacity,
            arrivals=arrivals,
            completions=done,
            workers=self.workers,
            workers_max=self.workers_max,
            busy=busy,
            service_samples=(service,) * min(done, 5),
        )

    def apply(self, actions: Sequence[Action]) -> None:
        for action in only(actions, "workers"):
            self.workers = int(action.value)


class BatchStage:
    """A batching stage: a handler call costs ``overhead`` plus ``per_event`` per event, so
    capacity grows with the batch size; the queue is unbounded."""

    def __init__(
        self,
        batch: int = 1,
        *,
        batch_max: int = 64,
        overhead: float = 0.010,
        per_event: float = 0.0005,
        dt: float = 0.1,
    ) -> None:
        self.batch, self.batch_max = batch, batch_max
        self.overhead, self.per_event, self.dt = overhead, per_event, dt
        self.queue = 0.0
        self.now = 0.0

    def capacity(self, batch: int) -> float:
        """Events per second at this batch size."""
        return batch / (self.overhead + batch * self.per_event)

    def step(self, offered: float) -> Observation:
        work = self.queue + offered * self.dt
        done = min(work, self.capacity(self.batch) * self.dt)
        self.queue = work - done
        self.now += self.dt
        return make(
            time=self.now,
            interval=self.dt,
            queue_length=round(self.queue),
            capacity=math.inf,
            arrivals=round(offered * self.dt),
            completions=round(done),
            busy=1,
            batch=self.batch,
            batch_max=self.batch_max,
        )

    def apply(self, actions: Sequence[Action]) -> None:
        for action in only(actions, "batch"):
            self.batch = int(action.value)


# The protocol, names, reprs, the factory ------------------------------------------------------


ALL: list[Controller] = [
    WorkerPool(),
    Batching(),
    USITS(1.0),
    AIMD(1.0),
    Gradient(),
]


@pytest.mark.parametrize("controller", ALL, ids=lambda c: c.name)
def test_every_controller_is_a_controller(controller: Controller) -> None:
    """Each controller satisfies the Controller protocol the runtime drives."""
    assert isinstance(controller, Controller)


def test_names() -> None:
    """Each controller has its short name."""
    assert [c.name for c in ALL] == ["workers", "batching", "usits", "aimd", "gradient"]


@pytest.mark.parametrize(
    ("controller", "expected"),
    [
        (
            WorkerPool(mode="seda", threshold=100, max_workers=20),
            "WorkerPool(mode='seda', threshold=100, idle_timeout=5.0, min_workers=None, "
            "max_workers=20, thrashing=False)",
        ),
        (
            Batching(batch_max=32),
            "Batching(window=1, step=1.2, batch_min=1, batch_max=32, factor=None, "
            "direction='down')",
        ),
        (
            USITS(1.0),
            "USITS(target=1.0, percentile=90.0, rate_min=0.05, rate_max=5000.0, classes=None, "
            "degrade=False, samples=100)",
        ),
        (
            AIMD(0.5, classes=["low", "high"]),
            "AIMD(target=0.5, percentile=90.0, rate_min=0.05, rate_max=1000000.0, "
            "classes=('low', 'high'), degrade=False, backoff=0.9, floor=0.5)",
        ),
        (
            Gradient(0.2),
            "Gradient(target=0.2, tolerance=1.5, min_limit=1, max_limit=1000, limit=20)",
        ),
    ],
)
def test_repr(controller: Controller, expected: str) -> None:
    """A controller's repr shows its class and main parameters."""
    assert expected == repr(controller)


@pytest.mark.parametrize("name", ["usits", "aimd", "gradient", "USITS", "Aimd"])
def test_factory_builds_by_name(name: str) -> None:
    """overload_controller(name, **params) builds the named class (any case)."""
    controller = overload_controller(name, target=0.5)
    assert type(controller) is OVERLOAD_CONTROLLERS[name.lower()]
    assert controller.name == name.lower()


def test_factory_passes_parameters() -> None:
    """Parameters reach the constructor."""
    controller = overload_controller("usits", target=2.0, rate_max=100.0)
    assert isinstance(controller, USITS)
    assert (controller.target, controller.rate_max) == (2.0, 100.0)


@pytest.mark.parametrize("name", ["pid", "", "usits2", 3])
def test_factory_unknown_name(name: Any) -> None:
    """An unknown name is a ConfigError listing the valid ones."""
    with pytest.raises(aseda.ConfigError, match="choose one of 'aimd', 'gradient', 'usits'"):
        overload_controller(name, target=1.0)


def test_factory_bad_parameters() -> None:
    """Parameters the controller does not take, or rejects, are a ConfigError too."""
    with pytest.raises(aseda.ConfigError, match=r"overload controller 'aimd'.*unexpected"):
        overload_controller("aimd", target=1.0, tolerance=2.0)
    with pytest.raises(aseda.ConfigError, match="missing"):
        overload_controller("usits")
    with pytest.raises(aseda.ConfigError, match="USITS target must be > 0"):
        overload_controller("usits", target=-1)


def wrong(value: object) -> Any:
    """A value of the wrong type, passed on unchecked (to test the run-time checks)."""
    return value


BAD: list[tuple[Any, str]] = [
    (lambda: WorkerPool(mode=wrong("fast")), "mode must be 'little' or 'seda'"),
    (lambda: WorkerPool(threshold=0), "threshold must be >= 1"),
    (lambda: WorkerPool(threshold=wrong(2.5)), "threshold must be a whole number"),
    (lambda: WorkerPool(threshold=True), "threshold must be a whole number"),
    (lambda: WorkerPool(idle_timeout=0), "idle_timeout must be > 0"),
    (lambda: WorkerPool(idle_timeout=math.inf), "idle_timeout must be finite"),
    (lambda: WorkerPool(idle_timeout=wrong("5")), "idle_timeout must be a number"),
    (lambda: WorkerPool(min_workers=5, max_workers=2), "min_workers 5 exceeds max_workers 2"),
    (lambda: WorkerPool(max_workers=0), "max_workers must be >= 1"),
    (lambda: WorkerPool(utilization=1.5), "utilization must be > 0 and <= 1"),
    (lambda: WorkerPool(thrashing=wrong(1)), "thrashing must be True or False"),
    (lambda: WorkerPool(thrash_backoff=-1), "thrash_backoff must be >= 0"),
    (lambda: WorkerPool(seed=wrong("x")), "seed must be an int or a random.Random"),
    (lambda: Batching(step=1.0), "step must be > 1"),
    (lambda: Batching(drop=0.01, recover=0.02), "recover .* must be smaller than drop"),
    (lambda: Batching(batch_min=8, batch_max=4), "batch_min 8 exceeds batch_max 4"),
    (lambda: Batching(window=0), "window must be >= 1"),
    (lambda: Batching(sudden_low=1.0), "sudden_low must be > 0 and < 1"),
    (lambda: USITS(0), "USITS target must be > 0"),
    (lambda: USITS(math.nan), "USITS target must be finite"),
    (lambda: USITS(1, percentile=0), "percentile must be > 0 and <= 100"),
    (lambda: USITS(1, rate_min=10, rate_max=1), "rate_min 10 exceeds rate_max 1"),
    (lambda: USITS(1, initial_rate=1e9), "initial_rate must be >= 0.05 and <= 5000"),
    (lambda: USITS(1, decrease=1.0), "decrease must be > 1"),
    (lambda: USITS(1, classes=[]), "classes must name at least one class"),
    (lambda: USITS(1, classes=["a", "a"]), "classes must list each class once"),
    (lambda: USITS(1, classes="ab"), "classes must be a sequence"),
    (lambda: USITS(1, classes=wrong([[1]])), "classes must hold hashable classes"),
    (lambda: USITS(1, degrade_hold=0), "degrade_hold must be >= 1"),
    (lambda: AIMD(1, backoff=1.0), "backoff must be > 0 and < 1"),
    (lambda: AIMD(1, floor=0.95), "floor must be > 0 and <= 0.9"),
    (lambda: AIMD(1, drain_time=0), "drain_time must be > 0"),
    (lambda: Gradient(tolerance=0.5), "tolerance must be >= 1"),
    (lambda: Gradient(initial_limit=5000), r"initial_limit must be within \[1, 1000\]"),
    (lambda: Gradient(min_limit=10, max_limit=5), "min_limit 10 exceeds max_limit 5"),
]


@pytest.mark.parametrize(("build", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_parameters(build: Any, message: str) -> None:
    """A bad constructor parameter is a ConfigError that names it."""
    with pytest.raises(aseda.ConfigError, match=message):
        build()


# WorkerPool ----------------------------------------------------------------------------------


def test_seda_mode_adds_one_worker_every_fourth_check() -> None:
    """The original: a queue at or over the threshold gets one more worker every 4th check."""
    controller = WorkerPool(mode="seda", threshold=100)
    workers, decisions = 1, []
    for check in range(1, 13):
        actions = controller.observe(make(time=check, queue_length=412, workers=workers))
        if actions:
            decisions.append((check, actions[0].value))
            workers = int(actions[0].value)
    assert decisions == [(4, 2), (8, 3), (12, 4)]
    assert actions[0].reason == "queue 412 >= 100 at check 12 (every 4th): 3 -> 4 workers"


def test_seda_mode_short_queue_adds_nothing() -> None:
    """Below the threshold the pool does not grow."""
    controller = WorkerPool(mode="seda", threshold=100)
    assert all(
        controller.observe(make(time=t, queue_length=99, busy=1)) == [] for t in range(1, 20)
    )


def test_little_mode_reaches_the_size_in_two_periods() -> None:
    """Little's law sizes the pool at once; the original needs one worker per four checks."""
    periods = {}
    modes: tuple[Literal["little", "seda"], ...] = ("little", "seda")
    for mode in modes:
        pool, controller = Pool(), WorkerPool(mode=mode)
        for period in range(1, 400):
            pool.apply(controller.observe(pool.step(offered=100)))  # 1000/s, 10 ms each
            if pool.workers >= 10:
                periods[mode] = period
                break
    assert periods["little"] <= 2
    assert periods["seda"] >= 36


def test_little_mode_settles_and_drains_the_queue() -> None:
    """After the growth the queue drains and the pool stays at Little's size, not above."""
    pool, controller = Pool(), WorkerPool()
    sizes = []
    for _ in range(300):
        pool.apply(controller.observe(pool.step(offered=100)))
        sizes.append(pool.workers)
    assert pool.queue == 0
    # 1000/s x 10 ms / 0.8 utilization = 12.5 -> 13 workers, a little more while draining.
    assert max(sizes) <= 16
    assert sizes[-100:] == [13] * 100


def test_little_mode_without_service_times_adds_one() -> None:
    """With no service time measured yet, growth falls back to one worker per period."""
    controller = WorkerPool()
    actions = controller.observe(make(queue_length=50, arrivals=100, workers=3))
    assert [(a.kind, a.value) for a in actions] == [("workers", 4)]
    assert "no service time measured yet" in actions[0].reason


def test_little_mode_grows_one_when_the_estimate_is_short_and_the_queue_grows() -> None:
    """If Little's law says the pool is big enough but the queue still grows, add one; while
    the backlog drains, add nothing."""
    controller = WorkerPool()
    quiet = dict(arrivals=10, service_samples=(0.01,), busy=4)
    # The queue grew from empty at the start: one more.
    actions = controller.observe(make(time=1, queue_length=20, workers=4, **quiet))
    assert [a.value for a in actions] == [5]
    assert actions[0].reason == (
        "queue 20 >= 8, 10/s x 10 ms / 0.8 = 0.125 workers + backlog 0.2, yet the queue "
        "grows: 4 -> 5 workers"
    )
    assert controller.observe(make(time=2, queue_length=10, workers=5, **quiet)) == []
    actions = controller.observe(make(time=3, queue_length=30, workers=5, **quiet))
    assert [a.value for a in actions] == [6]


@pytest.mark.parametrize("mode", ["little", "seda"])
def test_growth_stops_at_the_maximum(mode: Any) -> None:
    """The pool never grows past max_workers, nor past the stage's workers_max."""
    for controller, limit in (
        (WorkerPool(mode=mode, max_workers=5), 5),
        (WorkerPool(mode=mode), 7),
    ):
        pool = Pool(workers_max=7)
        for _ in range(200):
            pool.apply(controller.observe(pool.step(offered=1000)))
            assert pool.workers <= limit
        assert pool.workers == limit


def test_out_of_bounds_pool_is_brought_back() -> None:
    """A pool found outside the bounds is set to the nearest bound."""
    actions = WorkerPool(min_workers=2, max_workers=4).observe(make(workers=9))
    assert [(a.kind, a.value) for a in actions] == [("workers", 4)]
    assert actions[0].reason == "9 workers outside the bounds [2, 4]: 9 -> 4 workers"
    actions = WorkerPool(min_workers=2, max_workers=4).observe(make(workers=1))
    assert [a.value for a in actions] == [2]


def test_controller_bounds_never_leave_the_stage_bounds() -> None:
    """min_workers above the stage's maximum is capped by the stage's maximum."""
    actions = WorkerPool(min_workers=10).observe(make(workers=2, workers_max=4))
    assert [a.value for a in actions] == [4]


@pytest.mark.parametrize("mode", ["little", "seda"])
def test_idle_shrink_after_the_timeout_and_not_before(mode: Any) -> None:
    """Spare workers seen for idle_timeout seconds lose one worker per period, down to min."""
    controller = WorkerPool(mode=mode, idle_timeout=5.0, min_workers=2)
    workers, removed = 4, []
    for t in range(1, 12):
        actions = controller.observe(make(time=float(t), workers=workers, busy=0))
        if actions:
            removed.append((t, actions[0].value))
            workers = int(actions[0].value)
    # Spare first seen at t=1; 5 s later at t=6, then one per period down to the minimum.
    assert removed == [(6, 3), (7, 2)]


def test_idle_shrink_reason() -> None:
    """The reason says how many workers were spare, for how long."""
    controller = WorkerPool(idle_timeout=2.0)
    controller.observe(make(time=1.0, workers=3, busy=1))
    actions = controller.observe(make(time=3.5, workers=3, busy=1))
    assert actions[0].reason == "2 spare workers for 2.5 s >= 2 s: 3 -> 2 workers"


def test_idle_timer_restarts_when_every_worker_is_busy() -> None:
    """One observation without spare workers restarts the idle clock."""
    controller = WorkerPool(idle_timeout=3.0)
    assert controller.observe(make(time=1, workers=3, busy=1)) == []
    assert controller.observe(make(time=3, workers=3, busy=3)) == []  # all busy
    assert controller.observe(make(time=4, workers=3, busy=1)) == []  # spare again, t0 = 4
    assert controller.observe(make(time=6, workers=3, busy=1)) == []
    assert [a.value for a in controller.observe(make(time=7, workers=3, busy=1))] == [2]


def test_idle_timer_restarts_when_the_queue_builds() -> None:
    """A queue over the threshold is not idleness, even with spare workers counted."""
    controller = WorkerPool(idle_timeout=3.0, max_workers=3)
    controller.observe(make(time=1, workers=3, busy=1))
    controller.observe(make(time=2, workers=3, busy=1, queue_length=50))
    assert controller.observe(make(time=4, workers=3, busy=1)) == []
    assert controller.observe(make(time=6, workers=3, busy=1)) == []
    assert [a.value for a in controller.observe(make(time=7, workers=3, busy=1))] == [2]


def test_little_mode_does_not_shrink_below_littles_law() -> None:
    """Idle shrink stops at the workers Little's law says are busy (over the utilization)."""
    controller = WorkerPool(idle_timeout=1.0)
    workers = 20
    for t in range(1, 30):
        # 1000/s x 8 ms = 8 busy on average; / 0.8 -> 10 workers.
        observation = make(time=t, workers=workers, busy=8, arrivals=1000, service_samples=(0.008,))
        for action in controller.observe(observation):
            workers = int(action.value)
    assert workers == 10


def test_batch_busy_counts_in_workers() -> None:
    """On a batching stage, 8 busy events in batches of 4 fill 2 workers: none spare."""
    controller = WorkerPool(idle_timeout=1.0)
    busy = dict(workers=2, busy=8, batch=4, batch_max=4)
    assert controller.observe(make(time=1, **busy)) == []
    assert controller.observe(make(time=5, **busy)) == []
    controller.observe(make(time=6, workers=2, busy=3, batch=4, batch_max=4))  # 1 worker busy
    assert [a.value for a in controller.observe(make(time=8, workers=2, busy=3, batch=4))] == [1]


def run_thrashing(
    mode: Any, seed: int | random.Random, periods: int = 600
) -> tuple[Pool, list[Action]]:
    """A pool whose throughput peaks at 5 workers and falls beyond, queue always full."""
    pool = Pool(knee=5, capacity=500, workers_max=20)
    controller = WorkerPool(mode=mode, thrashing=True, seed=seed)
    decisions = []
    for _ in range(periods):
        actions = controller.observe(pool.step(offered=200))
        decisions.extend(actions)
        pool.apply(actions)
    return pool, decisions


@pytest.mark.parametrize("mode", ["little", "seda"])
def test_thrashing_backs_off_to_the_best_size(mode: Any) -> None:
    """When throughput falls as workers rise, the pool goes back to near the best size."""
    pool, decisions = run_thrashing(mode, seed=1)
    backoffs = [a for a in decisions if a.reason.startswith("thrashing")]
    assert backoffs
    assert all(2 <= a.value <= 5 for a in backoffs)
    assert 2 <= pool.workers <= 8
    without = Pool(knee=5, capacity=500, workers_max=20)
    controller = WorkerPool(mode=mode)
    for _ in range(600):
        without.apply(controller.observe(without.step(offered=200)))
    assert without.workers == 20  # no detection: the pool grows to its maximum


def test_little_mode_measures_sizes_and_holds_the_best() -> None:
    """In "little" mode growth doubles at most, each size's throughput is measured, and the
    best size caps growth after a back-off: no regrowth cycle."""
    _, decisions = run_thrashing("little", seed=2, periods=500)  # 50 s < thrash_memory
    assert [a.value for a in decisions] == [2, 4, 8, 4]
    assert decisions[-1].reason == (
        "thrashing: throughput 320/s at 8 workers < 400/s at 4: 8 -> 4 workers"
    )


def test_little_mode_probes_again_after_thrash_memory() -> None:
    """After thrash_memory seconds the cap is forgotten and the sizes are measured again."""
    _, decisions = run_thrashing("little", seed=2, periods=1300)  # 130 s: two re-probes
    assert [a.value for a in decisions] == [2, 4, 8, 4] + [8, 4] * 2


def test_thrashing_backoff_is_reproducible_from_the_seed() -> None:
    """The random back-off comes from the injected generator: same seed, same decisions."""
    runs = [run_thrashing("seda", seed=s)[1] for s in (7, 7, random.Random(7))]
    assert runs[0] == runs[1] == runs[2]
    reasons = {tuple(a.value for a in run_thrashing("seda", seed=s)[1]) for s in range(6)}
    assert len(reasons) > 1


def test_thrashing_ignores_a_load_that_falls() -> None:
    """A throughput that falls while the pool does not grow is the load, not thrashing."""
    controller = WorkerPool(thrashing=True, thrash_every=1, seed=0)
    for t in range(1, 40):
        completions = 1000 if t < 20 else 100
        actions = controller.observe(
            make(time=t, workers=6, busy=6, completions=completions, arrivals=completions)
        )
        assert not [a for a in actions if a.reason.startswith("thrashing")]


# Batching ------------------------------------------------------------------------------------


def test_not_a_batching_stage_is_left_alone() -> None:
    """A stage without a batch size gets no batch actions."""
    assert Batching().observe(make(completions=100)) == []


def test_first_window_starts_at_the_maximum() -> None:
    """As the original: the search starts at the maximum and decreases."""
    actions = Batching().observe(make(batch=1, batch_max=32, completions=100))
    assert [(a.kind, a.value) for a in actions] == [("batch", 32)]
    assert actions[0].reason == "first window, reset to the maximum: batch 1 -> 32"


def test_batch_max_parameter_caps_the_stage_maximum() -> None:
    """batch_max= narrows the stage's own maximum."""
    actions = Batching(batch_max=8).observe(make(batch=1, batch_max=32, completions=100))
    assert [a.value for a in actions] == [8]


def test_decreases_while_throughput_holds() -> None:
    """While the throughput holds, the factor is divided by 1.2 each window."""
    controller = Batching()
    controller.observe(make(batch=32, batch_max=32, completions=100))
    batches = []
    batch = 32
    for t in range(2, 8):
        actions = controller.observe(make(time=t, batch=batch, batch_max=32, completions=100))
        if actions:
            batch = int(actions[0].value)
        batches.append(batch)
    assert batches == [27, 22, 19, 15, 13, 11]  # 32 / 1.2**k, rounded
    assert "holds" in actions[0].reason


def test_emits_only_when_the_integer_changes() -> None:
    """A factor move that rounds to the same batch is not an action."""
    controller = Batching(batch_max=2)
    stage = BatchStage(batch=2, batch_max=2)
    counts = []
    for _ in range(20):
        actions = controller.observe(stage.step(offered=10))
        counts.append(len(actions))
        stage.apply(actions)
    assert sum(counts) <= 2  # 2 -> 1 once (and maybe back once); no repeats of the same value


def run_batching(
    controller: Batching, stage: BatchStage, loads: Sequence[tuple[int, float]]
) -> list[tuple[float, int, Action | None]]:
    """Feed (windows, offered load) phases; return (time, batch after, action) per window."""
    trace = []
    for windows, offered in loads:
        for _ in range(windows):
            actions = controller.observe(stage.step(offered))
            stage.apply(actions)
            trace.append((stage.now, stage.batch, actions[0] if actions else None))
    return trace


def knee(stage: BatchStage, offered: float) -> int:
    """The smallest batch whose capacity serves the offered load."""
    return next(b for b in range(1, stage.batch_max + 1) if stage.capacity(b) >= offered)


def test_converges_near_the_smallest_sufficient_batch_and_stays() -> None:
    """On a steady load the batch settles in a small band around the smallest that serves it."""
    stage = BatchStage(batch=1, batch_max=64)
    offered = 1000.0  # 1000/s needs batch 20 (20 / (10 ms + 20 x 0.5 ms) = 1000/s)
    trace = run_batching(Batching(), stage, [(300, offered)])
    k = knee(stage, offered)
    late = [batch for _, batch, _ in trace[-150:]]
    assert k == 20
    assert k / 1.5 <= min(late) and max(late) <= k * 1.5
    assert stage.queue < offered * 0.5  # the backlog stays under half a second


def test_grows_from_batch_one() -> None:
    """From batch 1 the float factor grows (1.2, 1.44, 1.73 -> 2): the original's could not."""
    stage = BatchStage(batch=1, batch_max=16, overhead=0.004, per_event=0.0002)
    # Capacity at 1 is 238/s, at 2 is 455/s: a load of 300/s needs batch 2, and the search
    # from the maximum goes down through 1 before the throughput drop turns it around.
    trace = run_batching(Batching(queue_signal=False), stage, [(200, 300.0)])
    batches = [batch for _, batch, _ in trace]
    at_one = batches.index(1)
    assert 2 in batches[at_one:]
    grow = next(a for _, b, a in trace[at_one:] if a is not None and b == 2)
    assert grow.reason.endswith("batch 1 -> 2")
    assert max(batches[-100:]) <= 3 and min(batches[-100:]) >= 1


def test_integer_factor_would_stick_at_one() -> None:
    """The reason for the float: int(1 * 1.2) is 1 forever."""
    factor = 1
    for _ in range(10):
        factor = int(factor * 1.2)
    assert factor == 1


@pytest.mark.parametrize("step", [5.0, 0.1])
def test_resets_to_the_maximum_on_a_sudden_load_change(step: float) -> None:
    """A load 5x higher or 10x lower resets to the maximum within a few windows."""
    stage = BatchStage(batch=1, batch_max=64)
    controller = Batching()
    run_batching(controller, stage, [(200, 400.0)])
    trace = run_batching(controller, stage, [(10, 400.0 * step)])
    resets = [(i, a) for i, (_, _, a) in enumerate(trace) if a is not None and "sudden" in a.reason]
    assert resets
    index, action = resets[0]
    # A rise shows in the smoothed load at once, so the next 5th window resets; a drop to a
    # tenth takes 6 windows of smoothing (0.7 old) to fall under 0.2x.
    assert index < (5 if step > 1 else 10)
    assert action.value == 64
    assert action.reason.startswith("sudden change: ")


def test_no_reset_on_a_steady_load() -> None:
    """A steady load never looks sudden."""
    trace = run_batching(Batching(), BatchStage(batch=1), [(300, 800.0)])
    assert not [a for _, _, a in trace if a is not None and "sudden" in a.reason]


def test_queue_signal_turns_the_search_when_the_load_rises_slowly() -> None:
    """A 50 % rise (not sudden) builds a queue; the queue signal makes the batch grow."""
    stage = BatchStage(batch=1, batch_max=64)
    controller = Batching()
    run_batching(controller, stage, [(300, 600.0)])
    before = stage.batch
    run_batching(controller, stage, [(300, 900.0)])
    assert stage.batch > before
    assert stage.queue < 900 * 0.5


def test_window_aggregates_observations() -> None:
    """With window=3 the controller decides on every third observation."""
    controller = Batching(window=3)
    decisions = [
        bool(controller.observe(make(time=t, batch=4, batch_max=32, completions=100)))
        for t in range(1, 7)
    ]
    assert decisions == [False, False, True, False, False, True]


# USITS ---------------------------------------------------------------------------------------


def usits_update(
    controller: USITS, rt: float, *, rates: dict[Hashable, float] | None = None, t: float = 1.0
) -> list[Action]:
    """One update: 100 samples all equal to ``rt``."""
    return controller.observe(
        make(time=t, response_samples=(rt,) * 100, rates={None: 100.0} if rates is None else rates)
    )


def test_usits_waits_for_100_samples() -> None:
    """No update before 100 samples (within the second)."""
    controller = USITS(1.0)
    for i in range(9):
        observation = make(time=0.1 * (i + 1), interval=0.1, response_samples=(3.0,) * 11)
        assert controller.observe(observation) == []
    # 99 samples so far; one more makes 100.
    actions = controller.observe(make(time=0.95, interval=0.05, response_samples=(3.0,)))
    assert [a.kind for a in actions] == ["rate"]


def test_usits_updates_after_one_second_with_few_samples() -> None:
    """One second of observation time is enough, however few the samples."""
    controller = USITS(1.0)
    assert controller.observe(make(time=0.5, interval=0.5, response_samples=(3.0,) * 3)) == []
    assert controller.observe(make(time=1.0, interval=0.5, response_samples=(3.0,) * 2))


def test_usits_no_samples_no_update() -> None:
    """A period without samples is not judged, even past a second."""
    controller = USITS(1.0)
    assert controller.observe(make(time=5.0, interval=5.0, queue_length=100)) == []


def test_usits_multiplicative_decrease() -> None:
    """Over target, a single class is cut by 1.2."""
    actions = usits_update(USITS(1.0), 1.8)
    assert [(a.kind, a.cls) for a in actions] == [("rate", None)]
    assert actions[0].value == pytest.approx(100 / 1.2)
    assert actions[0].reason == "p90 1.8 s > target 1 s (err +0.80): rate 100 -> 83.3/s"


def test_usits_smooths_the_percentile() -> None:
    """rt = 0.7 previous + 0.3 new."""
    controller = USITS(1.0)
    usits_update(controller, 0.1)
    usits_update(controller, 2.1, t=2.0)
    assert controller.rt == pytest.approx(0.7 * 0.1 + 0.3 * 2.1, rel=0.02)


def test_usits_additive_increase() -> None:
    """Well under target (err < -0.5) the rate rises by 2.0 * (-err - 0.1)."""
    actions = usits_update(USITS(1.0), 0.2)
    assert len(actions) == 1
    err = (actions[0].value - 100) / 2.0 + 0.1
    assert -err == pytest.approx((0.2 - 1.0) / 1.0, abs=0.02)
    assert actions[0].value == pytest.approx(100 + 2.0 * (0.8 - 0.1), abs=0.05)


def test_usits_holds_between_half_and_full_target() -> None:
    """-0.5 <= err <= 0: no change."""
    assert usits_update(USITS(1.0), 0.7) == []
    assert usits_update(USITS(1.0), 1.0) == []


def test_usits_cuts_lower_classes_first() -> None:
    """Over target, every lower class is divided by 10 until all are at the floor; then the
    highest class by 1.2."""
    controller = USITS(1.0, classes=["bulk", "normal", "gold"])
    rates: dict[Hashable, float] = {"bulk": 100.0, "normal": 100.0, "gold": 100.0}
    history = []
    for t in range(1, 8):
        for action in usits_update(controller, 5.0, rates=rates, t=t):
            rates[action.cls] = action.value
        history.append(dict(rates))
    assert history[0] == {"bulk": 10.0, "normal": 10.0, "gold": 100.0}
    assert history[1] == pytest.approx({"bulk": 1.0, "normal": 1.0, "gold": 100.0})
    assert history[3] == pytest.approx({"bulk": 0.05, "normal": 0.05, "gold": 100.0})
    assert history[4]["gold"] == pytest.approx(100 / 1.2)
    assert history[5]["gold"] == pytest.approx(100 / 1.2**2)


def test_usits_classes_from_observed_rates() -> None:
    """Without classes=, the observed rates' keys are the classes, sorted lowest first."""
    actions = usits_update(USITS(1.0), 5.0, rates={2: 50.0, 1: 50.0})
    assert [(a.cls, a.value) for a in actions] == [(1, 5.0)]
    assert actions[0].reason.endswith("lower class first: class 1 rate 50 -> 5/s")


def test_usits_initial_rate_when_the_stage_reports_none() -> None:
    """A stage that reports no rate starts from initial_rate (else rate_max)."""
    actions = USITS(1.0, initial_rate=60.0).observe(make(response_samples=(5.0,) * 100))
    assert [a.value for a in actions] == [50.0]
    actions = USITS(1.0).observe(make(response_samples=(5.0,) * 100))
    assert [a.value for a in actions] == [pytest.approx(5000 / 1.2)]


def test_usits_degrade_on_then_off() -> None:
    """degrade=True: over target asks to degrade instead of cutting; back under target for
    degrade_hold updates in a row, it stops."""
    controller = USITS(1.0, degrade=True, degrade_hold=5)
    actions = usits_update(controller, 3.0)
    assert [(a.kind, a.value) for a in actions] == [("degrade", 1)]
    assert actions[0].reason == "p90 3 s > target 1 s (err +2.00): degrade"
    # The smoothed rt falls 2.13, 1.52, 1.09 (over), 0.79, 0.58, 0.43, 0.33, 0.26 (under).
    off, rates = [], []
    for t in range(2, 13):
        for action in usits_update(controller, 0.1, t=t):
            if action.kind == "degrade":
                off.append((t, action.value))
            else:
                rates.append(action.value)
    assert off == [(9, 0)]
    assert rates and all(rate > 100 for rate in rates)  # never cut; raised once well under


def test_usits_degrade_escalates_to_cutting() -> None:
    """Still over target degrade_hold updates after degrading, the rate is cut as well."""
    controller = USITS(1.0, degrade=True, degrade_hold=2)
    kinds = [[a.kind for a in usits_update(controller, 3.0, t=t)] for t in range(1, 5)]
    assert kinds == [["degrade"], [], ["rate"], ["rate"]]


def test_usits_steady_overload_meets_the_target() -> None:
    """3x overload from a rate 1.5x capacity: USITS settles where the p90 meets the target
    in nine periods out of ten, the rate within [capacity / 2, 1.1 x capacity]."""
    _, trace = spike(USITS(0.2), dt=0.1, before=0.0, after=120.0, high=300.0)
    late = [row for row in trace if row[0] > 30]
    assert sum(p90 > 0.2 for _, p90, _, _ in late) / len(late) < 0.12
    assert all(50 <= rate <= 110 for _, _, rate, _ in late)


# AIMD ----------------------------------------------------------------------------------------


def test_aimd_cuts_from_the_served_rate() -> None:
    """Over target the cut starts from what the stage served, not from the rate."""
    controller = AIMD(0.2)
    observation = make(
        interval=0.1,
        queue_length=40,
        completions=10,
        arrivals=50,
        busy=1,
        response_samples=(0.25,) * 10,
        service_samples=(0.01,) * 10,
        rates={None: 1000.0},
    )
    actions = controller.observe(observation)
    assert controller.capacity == 100.0
    # queue 40 at 100/s: 0.41 s > 0.2 -> x0.5 of 100/s, minus (40 - 19 queued) / 0.25 s.
    assert [(a.kind, a.value) for a in actions] == [("rate", 0.05)]
    assert "queue 40 (410 ms) > target 200 ms, x0.50 of 100/s, draining 21 queued" in (
        actions[0].reason
    )


def test_aimd_cut_is_proportional_to_the_overshoot() -> None:
    """A small overshoot cuts by 10 %, a large one by half."""
    mild = make(
        interval=1.0,
        completions=100,
        busy=1,
        response_samples=(0.21,) * 10,
        rates={None: 100.0},
    )
    assert [a.value for a in AIMD(0.2).observe(mild)] == [pytest.approx(90.0)]
    harsh = dataclasses.replace(mild, response_samples=(0.8,) * 10)
    assert [a.value for a in AIMD(0.2).observe(harsh)] == [pytest.approx(50.0)]


def test_aimd_fast_recovery_then_additive_increase() -> None:
    """Under half the target with refusals, the rate returns to 90 % of capacity at once,
    then grows by 2 % of capacity per period."""
    controller = AIMD(0.2)
    controller.capacity = 100.0
    calm = make(interval=0.1, completions=5, arrivals=5, refused=40, response_samples=(0.01,) * 5)
    actions = controller.observe(dataclasses.replace(calm, rates={None: 10.0}))
    assert [a.value for a in actions] == [pytest.approx(90.0)]
    assert "fast recovery" in actions[0].reason
    actions = controller.observe(dataclasses.replace(calm, rates={None: 90.0}))
    assert [a.value for a in actions] == [pytest.approx(92.0)]
    assert "additive increase" in actions[0].reason


def test_aimd_does_not_raise_a_rate_that_does_not_bind() -> None:
    """Nothing refused: the rate is not what limits the stage, so it is left alone."""
    calm = make(interval=0.1, completions=5, arrivals=5, response_samples=(0.01,) * 5)
    assert AIMD(0.2).observe(dataclasses.replace(calm, rates={None: 10.0})) == []


def test_aimd_holds_near_the_target() -> None:
    """Between half the target and the target: no increase; trim if the queue builds."""
    controller = AIMD(0.2)
    near = make(
        interval=0.1,
        completions=10,
        arrivals=10,
        refused=5,
        queue_length=12,
        busy=1,
        response_samples=(0.13,) * 10,
        rates={None: 100.0},
    )
    assert controller.observe(near) == []
    building = dataclasses.replace(near, arrivals=14, rates={None: 140.0})
    actions = controller.observe(building)
    assert [a.value for a in actions] == [pytest.approx(90.0)]
    assert "building, trim to 0.9 x 100/s" in actions[0].reason


def test_aimd_cuts_the_lowest_class_first() -> None:
    """A cut takes from the lowest class down to rate_min before touching the next."""
    controller = AIMD(0.2, classes=["low", "mid", "high"])
    observation = make(
        interval=1.0,
        completions=90,
        busy=1,
        response_samples=(0.4,) * 10,
        rates={"low": 30.0, "mid": 30.0, "high": 30.0},
    )
    # total 90 -> 45: low gives 29.95, mid gives 15.05, high keeps 30.
    actions = controller.observe(observation)
    assert [(a.cls, round(a.value, 2)) for a in actions] == [("low", 0.05), ("mid", 14.95)]


def test_aimd_recovers_once_a_deep_cut_has_emptied_the_stage() -> None:
    """Cut to rate_min by a backlog, the stage drains and idles: with requests still being
    refused, the next observation restores 90 % of capacity (a stale service time must not
    keep the rate at the minimum for good)."""
    controller = AIMD(1.0)
    backlog = make(
        interval=0.25,
        queue_length=60,
        completions=12,
        arrivals=30,
        busy=4,
        response_samples=(1.6,) * 12,
        service_samples=(0.6,) * 12,
        rates={None: 50.0},
    )
    assert [a.value for a in controller.observe(backlog)] == [0.05]
    idle = make(interval=0.25, refused=20, rates={None: 0.05})
    actions = controller.observe(idle)
    assert [a.value for a in actions] == [pytest.approx(0.9 * controller.capacity)]
    assert actions[0].reason.startswith("idle <= 0.5 x target 1 s, fast recovery")


def test_aimd_raises_the_highest_refused_class_first_up_to_its_demand() -> None:
    """An increase goes to the highest class that was refused, up to 1.1 x what it offered;
    the rest to the next class down; a class not refused gets nothing."""
    controller = AIMD(0.2, classes=["low", "high"])
    controller.capacity = 100.0
    calm = make(
        interval=1.0,
        completions=10,
        arrivals=10,
        refused=120,
        response_samples=(0.01,) * 10,
        rates={"low": 5.0, "high": 5.0},
        class_offered={"low": 60, "high": 50},
        class_refused={"low": 60, "high": 45},
    )
    # fast recovery: +80/s in all; high takes 1.1 x 50 - 5 = 50, low the remaining 30.
    actions = controller.observe(calm)
    assert [(a.cls, round(a.value, 2)) for a in actions] == [("high", 55.0), ("low", 35.0)]
    # Once high is no longer refused, an additive increase goes to low alone.
    settled = dataclasses.replace(
        calm,
        rates={"low": 35.0, "high": 55.0},
        class_offered={"low": 60, "high": 50},
        class_refused={"low": 25, "high": 0},
    )
    assert [(a.cls, round(a.value, 2)) for a in controller.observe(settled)] == [("low", 37.0)]


def test_aimd_degrade() -> None:
    """degrade=True: degrade over target, stop after degrade_hold periods under it."""
    controller = AIMD(0.2, degrade=True, degrade_hold=2)
    over = make(interval=0.1, completions=10, response_samples=(0.5,) * 10, rates={None: 100.0})
    under = dataclasses.replace(over, response_samples=(0.05,) * 10)
    assert [(a.kind, a.value) for a in controller.observe(over)] == [("degrade", 1)]
    assert controller.observe(under) == []
    assert [(a.kind, a.value) for a in controller.observe(under)] == [("degrade", 0)]


def test_aimd_needs_a_signal() -> None:
    """No samples and no throughput: no decision."""
    assert AIMD(0.2).observe(make(queue_length=10)) == []


@pytest.mark.parametrize("rate", [150.0, 1000.0])
def test_aimd_recovers_from_a_10x_spike_within_half_a_second(rate: float) -> None:
    """The issue's spike target: p90 back under target within 0.5 s of a 10x jump."""
    recovery, trace = spike(AIMD(0.2), dt=0.05, rate=rate)
    assert recovery <= 0.5
    late = [row for row in trace if row[0] > 7.0]
    assert all(p90 <= 0.2 for _, p90, _, _ in late)


def test_aimd_recovers_in_fewer_periods_than_usits() -> None:
    """On the same 10x step, AIMD is back under target in a few periods; USITS in seconds."""
    periods = {}
    for controller in (AIMD(0.2), USITS(0.2)):
        recovery, _ = spike(controller, dt=0.1, after=20.0)
        periods[controller.name] = round(recovery / 0.1)
    assert periods["aimd"] <= 5
    assert periods["usits"] > 10 * periods["aimd"] + 20


def test_aimd_steady_overload_stays_in_a_small_band() -> None:
    """After the spike AIMD admits about the capacity, rate within [0.8, 1.2] x capacity,
    p90 always under target."""
    _, trace = spike(AIMD(0.2), dt=0.05, after=30.0)
    late = [row for row in trace if row[0] > 10]
    assert all(80 <= rate <= 120 for _, _, rate, _ in late)
    assert all(p90 <= 0.2 for _, p90, _, _ in late)
    admitted = sum(n for *_, n in late) / (len(late) * 0.05)
    assert 95 <= admitted <= 101


# Gradient ------------------------------------------------------------------------------------


def test_gradient_grows_while_latency_holds() -> None:
    """At the baseline latency the limit grows by queue_size, smoothed."""
    controller = Gradient(initial_limit=20)
    limits = []
    for t in range(20):
        for action in controller.observe(
            make(time=t, response_samples=(0.01,) * 10, queue_length=30, busy=4)
        ):
            limits.append(action.value)
    assert limits == sorted(limits) and limits[-1] > 30


def test_gradient_shrinks_when_latency_rises() -> None:
    """Latency far above the long-term baseline halves the new limit (smoothed)."""
    controller = Gradient(initial_limit=100)
    busy = dict(queue_length=100, busy=4)
    for t in range(50):
        controller.observe(make(time=t, response_samples=(0.01,) * 10, **busy))
    start = controller.limit
    actions = controller.observe(make(time=60, response_samples=(0.1,) * 10, **busy))
    assert [a.kind for a in actions] == ["credits"]
    assert controller.limit == pytest.approx(start * 0.8 + (start * 0.5 + 4) * 0.2)
    assert "(gradient 0.50)" in actions[0].reason


def test_gradient_application_limited_holds() -> None:
    """With fewer than half the credits in use the limit does not move."""
    controller = Gradient(initial_limit=100)
    assert controller.observe(make(response_samples=(0.01,) * 10, queue_length=10)) == []


def test_gradient_target_cuts_even_when_application_limited() -> None:
    """With a target, a p90 over it lowers the limit by target / p90."""
    controller = Gradient(0.1, initial_limit=100)
    actions = controller.observe(make(response_samples=(0.4,) * 10, queue_length=10))
    assert [a.kind for a in actions] == ["credits"]
    assert controller.limit == pytest.approx(100 * 0.8 + (100 * 0.5 + 4) * 0.2)
    assert actions[0].reason == (
        "rt 400 ms vs long-term 400 ms (gradient 0.50), p90 400 ms > target 100 ms: "
        "credits 100 -> 91"
    )


def test_gradient_bounds() -> None:
    """The limit stays within [min_limit, max_limit]."""
    controller = Gradient(0.001, initial_limit=3, min_limit=2, max_limit=5)
    values = []
    for t in range(50):
        values += [a.value for a in controller.observe(make(time=t, response_samples=(1.0,)))]
    for t in range(50, 500):
        values += [
            a.value
            for a in controller.observe(
                make(time=t, response_samples=(0.0001,), queue_length=50, busy=5)
            )
        ]
    assert values and all(2 <= v <= 5 for v in values)
    assert values[-1] == 5


# Properties: bounds hold for any observation sequence -----------------------------------------

samples = st.lists(st.floats(0.0, 100.0), max_size=30).map(tuple)
steps = st.lists(
    st.fixed_dictionaries(
        {
            "interval": st.floats(0.0, 5.0),
            "queue_length": st.integers(0, 100_000),
            "arrivals": st.integers(0, 100_000),
            "completions": st.integers(0, 100_000),
            "refused": st.integers(0, 100_000),
            "busy": st.integers(0, 200),
            "response_samples": samples,
            "service_samples": samples,
        }
    ),
    min_size=1,
    max_size=60,
)


def feed(
    controller: Controller, stage: dict[str, Any], sequence: list[dict[str, Any]]
) -> list[Action]:
    """Feed the sequence, applying each action to the next observation as the runtime would."""
    state = dict(stage)
    rates: dict[Hashable, float] = dict(state.pop("rates", {}))
    seen: list[Action] = []
    now = 0.0
    for step in sequence:
        now += step["interval"]
        actions = controller.observe(make(time=now, rates=dict(rates), **state, **step))
        for action in actions:
            assert math.isfinite(action.value) and action.reason
            if action.kind == "workers":
                state["workers"] = int(action.value)
            elif action.kind == "batch":
                state["batch"] = int(action.value)
            elif action.kind == "rate":
                rates[action.cls] = action.value
        seen.extend(actions)
    return seen


@settings(max_examples=150, deadline=None)
@given(
    sequence=steps,
    mode=st.sampled_from(["little", "seda"]),
    bounds=st.tuples(st.integers(0, 8), st.integers(1, 40)).map(sorted),
    limits=st.tuples(
        st.one_of(st.none(), st.integers(0, 10)), st.one_of(st.none(), st.integers(1, 50))
    ),
    workers=st.integers(0, 60),
)
def test_worker_pool_stays_within_bounds(
    sequence: list[dict[str, Any]],
    mode: Any,
    bounds: list[int],
    limits: tuple[int | None, int | None],
    workers: int,
) -> None:
    """Whatever it observes, the pool size asked for is inside both sets of bounds."""
    low, high = max(bounds[0], 0), max(bounds[1], 1)
    min_workers, max_workers = limits
    if min_workers is not None and max_workers is not None and min_workers > max_workers:
        min_workers, max_workers = max_workers, min_workers
    controller = WorkerPool(
        mode=mode,
        min_workers=min_workers,
        max_workers=max_workers,
        thrashing=True,
        seed=0,
        idle_timeout=0.5,
    )
    stage = {"workers": workers, "workers_min": low, "workers_max": high}
    lo = low if min_workers is None else max(low, min_workers)
    hi = high if max_workers is None else min(high, max_workers)
    lo = min(lo, hi)
    for action in feed(controller, stage, sequence):
        assert action.kind == "workers"
        assert lo <= action.value <= hi


@settings(max_examples=150, deadline=None)
@given(
    sequence=steps,
    batch=st.integers(1, 100),
    batch_max=st.integers(1, 100),
    limit=st.one_of(st.none(), st.integers(1, 100)),
    window=st.integers(1, 3),
)
def test_batching_stays_within_bounds(
    sequence: list[dict[str, Any]], batch: int, batch_max: int, limit: int | None, window: int
) -> None:
    """Whatever it observes, the batch asked for is in [1, min(batch_max, stage maximum)]."""
    controller = Batching(batch_max=limit, window=window)
    stage = {"batch": batch, "batch_max": batch_max}
    high = batch_max if limit is None else min(batch_max, limit)
    for action in feed(controller, stage, sequence):
        assert action.kind == "batch"
        assert 1 <= action.value <= high
        assert action.value == int(action.value)


@settings(max_examples=150, deadline=None)
@given(
    sequence=steps,
    name=st.sampled_from(["usits", "aimd"]),
    target=st.floats(0.001, 10.0),
    classes=st.sampled_from([None, ("low", "high"), (1, 2, 3)]),
    start=st.floats(0.001, 1e7),
    degrade=st.booleans(),
)
def test_rate_controllers_stay_within_the_rate_range(
    sequence: list[dict[str, Any]],
    name: str,
    target: float,
    classes: tuple[Hashable, ...] | None,
    start: float,
    degrade: bool,
) -> None:
    """Whatever they observe, rates stay in [rate_min, rate_max], per class."""
    controller = overload_controller(
        name, target=target, classes=classes, rate_min=0.05, rate_max=5000.0, degrade=degrade
    )
    keys: tuple[Hashable, ...] = classes or (None,)
    stage = {"rates": {cls: start for cls in keys}}
    for action in feed(controller, stage, sequence):
        assert action.kind in ("rate", "degrade")
        if action.kind == "rate":
            assert action.cls in keys
            assert 0.05 <= action.value <= 5000.0
        else:
            assert action.value in (0, 1)


@settings(max_examples=100, deadline=None)
@given(sequence=steps, target=st.one_of(st.none(), st.floats(0.001, 10.0)))
def test_gradient_stays_within_bounds(sequence: list[dict[str, Any]], target: float | None) -> None:
    """Whatever it observes, the credits asked for are in [min_limit, max_limit]."""
    controller = Gradient(target, initial_limit=10, min_limit=3, max_limit=50)
    for action in feed(controller, {}, sequence):
        assert action.kind == "credits"
        assert 3 <= action.value <= 50
