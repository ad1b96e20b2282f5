"""Feedback controllers at work: SEDA's four experiments, re-run on aseda's controllers.

Run by hand from the repository root (it is a benchmark, not a test)::

    python -m benchmarks.controllers                        # all four parts, ~5 min
    python -m benchmarks.controllers --quick                # shorter runs, ~1.5 min
    python -m benchmarks.controllers --only gnutella,spike  # some parts
    python -m benchmarks.controllers --json out.json        # also every figure as JSON
    python -m benchmarks.controllers --plots DIR            # PNGs (benchmarks/results)

Every part builds fresh one-stage graphs, drives them with the benchmark toolkit
(``aseda.bench``: ``open_loop`` free of coordinated omission, or closed-loop clients), and lets
a controller from ``aseda`` (``WorkerPool``, ``Batching``, ``USITS``, ``AIMD``) steer the
stage through ``graph.run(control=..., control_interval=...)``: the runtime observes the stage
every ``control_interval`` seconds and applies the controller's actions. Latencies are
measured by the clients, from each request's intended send time (open loop) or from when a
closed-loop client sent it; percentiles come from aseda's latency histogram (within 1.6 %).
Each part prints progress lines, its table and its targets, PASS or MISS, and writes a PNG to
``--plots`` (``controllers-<part>.png``); a summary of every target closes the run. Lines
marked ``ref`` are printed for comparison and not counted: SEDA's own controller (USITS), a
controller with its default parameters where the target uses another value, and diagnostic
runs that tell the controller from the runtime.

1. gnutella: SEDA's Gnutella router (SOSP 2001, section 3 of the notes). A blocking stage, a
   plain ``def`` that does ``time.sleep(20 ms)`` on 15 % of the packets (the "queries"; the
   rest, "pings", cost nothing), so the runtime's threads are what the controller resizes.
   Poisson arrivals at 100, 200, 400 and 1000 packets/s (5 s; the first second is left out of
   the means) to three stages: one fixed worker (the single-threaded router), and
   ``workers=(1, 20)`` with ``WorkerPool(threshold=16, utilization=0.9)`` (``mode="little"``,
   the default: Little's law) or ``WorkerPool(mode="seda", threshold=16)`` (the original: one
   more worker every 4th check while the queue holds 16 or more), observed every 0.1 s. Two
   parameters differ from the defaults. The threshold (8) is sized for async handlers of micro-
   to milliseconds; here one query holds a thread for 20 ms, during which some 20 packets
   arrive at 1000/s, so a queue of 8 at a sample is a burst rather than a shortage (with 8, the
   little mode now and then adds a worker on such a burst, through its "the queue grew" rule).
   And the pool is sized for 90 % of its workers busy rather than 80 %: its first estimate
   comes from one 0.1 s period, about 100 packets, whose share of queries, and so whose mean
   service time, varies by a fifth; the default's 25 % of headroom on top of that makes 6
   workers in some runs, where Little's law needs 3. The table has the mean latency of all, of
   pings and of queries (the paper's "ping / query"), the p90, the packets left unserved when
   arrivals stopped, and the pool: the most workers it had at any time and its time-weighted
   mean in the measured window. Little's law needs ``rate x 0.15 x 20 ms`` busy workers: 3 at
   1000/s.
   Targets: with the controller (little mode) at 1000/s, mean latency < 40 ms, with at most
   Little's need + 2 = 5 workers at any time; the fixed single worker melts down at 1000/s
   (mean latency of what it serves > 1 s, more than 1000 packets unserved at the end).

2. batching: a batch handler with a fixed cost per call (5 ms) plus a cost per event
   (0.25 ms), ``await anyio.sleep(0.005 + 0.00025 * len(batch))``, one worker, ``batch=256``.
   First the throughput per fixed batch size, two ways: saturated (a producer keeps the queue
   full with ``send()``: the stage's capacity at that size), and under the load the controller
   will see, an open-loop 1500 events/s (a bit under half the saturated peak), where a batch
   too small to serve it sheds the excess at the full queue. The smallest batch whose
   throughput at 1500/s reaches 90 % of the peak there is ``b*``. Then ``Batching()``, observed
   every 0.25 s, steers the batch under the same 1500/s, starting from 256; the settled batch is
   the median of its batch over the last third of the run. Target: settled within 2x of
   ``b*``, serving 90 % of the peak. The target run uses ``Batching(drop=0.2, recover=0.1)``:
   an increase ends within 10 % of the best throughput instead of 2 % (and, as ``drop`` must
   exceed ``recover``, a decrease goes on to a 20 % loss instead of 10 %; under an open-loop
   load it is the queue growing, not the loss, that ends a decrease). The best is the highest
   smoothed throughput seen, and under an open-loop load it is measured while a backlog
   drains, some percent above the offered load, which is all the stage can serve once the
   backlog is gone; within 2 % of it is then out of reach, and the search climbs back to 256
   before it re-anchors (the ``ref`` run with the defaults shows it). A second ``ref`` run
   steers the saturated stage with the defaults, SEDA's search as published: there the
   throughput keeps rising with the batch (``b / (F + b c)`` has no knee), and the search
   cycles between a batch that loses 10 % and one back within 2 % of the best.

3. overload: the Arashi figure (Welsh & Culler, USITS 2003): 128 closed-loop clients that
   think 20 ms, against a stage of fixed capacity: one worker doing ``await anyio.sleep(15
   ms)`` (about 64 requests/s), ``on_refuse="shed"``. Time is scaled down 4x to keep runs
   short: the p90 target is 0.25 s instead of 1 s, and USITS's update period with it
   (``USITS(0.25, period=0.25)``, otherwise its defaults); ``AIMD(0.25)`` at its defaults; both
   observed every 0.05 s. With no control every client queues, and the p90 is
   ``128 / capacity - think`` ~ 2 s, 8x the target, as SEDA's 7.5 s was for 1 s. A refused
   client is told at once and backs off before its next attempt, for a random (exponential)
   2 s on average, as a user reading a "busy, try again" page would. The paper does not give
   its clients' back-off, but its rows imply one of this order: 49 % refused means about twice
   the capacity offered, while clients retrying 20 ms after a refusal would offer some 20
   times the capacity. (The toolkit's ``closed_loop()`` thinks the same after every outcome,
   so these clients are a small loop of their own, recorded as the toolkit's ``Sample`` and
   summarised by its ``Samples.report()``.) The offered load is the clients' attempts per
   second in the measured window, after a 10 s warm-up in which USITS walks its rate down
   from 5000/s; the capacity is what the uncontrolled stage served, saturated; the theoretical
   minimum refusal rate is ``1 - capacity / offered``. Printed as SEDA's two rows, then one row
   per aseda run. Targets (AIMD): p90 under the target, with a refusal rate at most 5 points
   above that minimum. The ``"USITS, bucket"`` run declares the stage's token bucket
   (``TokenBucket(5000, burst=8)``) instead of letting the runtime install one on the first
   cut, to tell USITS's own dynamics from the bucket the runtime installs.

4. spike: an open-loop Poisson load of 120 requests/s jumps 10x, to 1200/s, for 10 s, then
   falls back (3 s of base load before, 4 s after; ``--quick``: a 3 s spike). The stage: 4
   workers doing ``await anyio.sleep(10 ms)`` (about 390/s, so the spike is 3x its capacity),
   ``on_refuse="shed"``, p90 target 100 ms; ``AIMD(0.1)`` and ``USITS(0.1)`` at their
   defaults, observed every 0.05 s. The run is cut in 100 ms windows: the p90 of the requests
   served in each, the admitted and refused requests per second (by intended send time), and
   the token bucket's rate as the controller set it. "p90 back under target" is when a full
   second of windows with every p90 under the target starts; "rate recovered" is when, from
   then to the end, every 0.5 s of requests is at least 95 % admitted. Targets (AIMD): p90
   back under target within 0.5 s of the jump (SEDA needed 1.58 s for a 1.4x spike, DAGOR
   0.5 s); rate recovered within 2 s of the spike's end. ``"AIMD, bucket"`` declares the
   stage's bucket (``TokenBucket(1e6, burst=20)``), as in part 3.

The rate controllers act through the stage's token bucket. A stage without one gets one from
the runtime on the first ``"rate"`` action, with a burst of a tenth of that first rate, kept
for the rest of the run; the diagnostic runs show what that costs. The declared bursts are
about half the queue the target allows, ``capacity x (target - service) / 2``. On a shared
two-core machine every figure moves by some percent from run to run; the generator's p99 lag
is printed where it matters (tens of milliseconds would mean the machine, not the stage, was
the bottleneck).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import anyio
import structlog

import aseda
from aseda.bench import Outcome, Phase, Report, Sample, Samples, graph_target, open_loop

T = TypeVar("T")

clock = time.perf_counter

PARTS = ("gnutella", "batching", "overload", "spike")

# Part 1: gnutella --------------------------------------------------------------------------------

#: Seconds of blocking work of a query packet, and the share of packets that are queries.
QUERY_WORK = 0.020
QUERY_SHARE = 0.15
GNUTELLA_RATES = (100.0, 200.0, 400.0, 1000.0)
GNUTELLA_MODES = ("fixed", "seda", "little")
GNUTELLA_INTERVAL = 0.1
#: Queue length that makes the pool grow (the default is 8; see the module doc).
GNUTELLA_THRESHOLD = 16
#: The busy share the little mode sizes the pool for (the default is 0.8; see the module doc).
GNUTELLA_UTILIZATION = 0.9
GNUTELLA_MAX_WORKERS = 20
#: The mean latency target at the top rate, and the melt-down thresholds of the fixed worker.
GNUTELLA_TARGET = 0.040
MELTDOWN_MEAN = 1.0
MELTDOWN_BACKLOG = 1000

# Part 2: batching --------------------------------------------------------------------------------

BATCH_FIXED = 0.005
BATCH_PER_EVENT = 0.00025
BATCH_MAX = 256
BATCH_SIZES = (1, 2, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
QUICK_BATCH_SIZES = (1, 4, 8, 12, 16, 24, 32, 256)
BATCH_LOAD = 1500.0
BATCH_INTERVAL = 0.25
#: A batch reaching this share of the peak throughput counts as reaching it.
BATCH_PEAK_SHARE = 0.90
BATCH_TOLERANCE = 2.0
BATCH_QUEUE = 4 * BATCH_MAX
#: The controller's parameters for the target (the defaults run as a reference): an increase
#: ends within 10 % of the best throughput instead of 2 % (out of reach when the best was
#: measured while a backlog drained, above the offered load; see the module doc), and a
#: decrease goes on to a loss of 20 % instead of 10 % (drop must stay above recover).
BATCHING_DROP = 0.2
BATCHING_RECOVER = 0.1

# Part 3: overload --------------------------------------------------------------------------------

OVERLOAD_CLIENTS = 128
OVERLOAD_THINK = 0.020
OVERLOAD_SERVICE = 0.015
#: SEDA's 1 s target, scaled down 4x (and USITS's period with it).
OVERLOAD_SCALE = 0.25
OVERLOAD_TARGET = 1.0 * OVERLOAD_SCALE
#: Mean seconds a refused client backs off before its next attempt (exponential).
OVERLOAD_BACKOFF = 2.0
OVERLOAD_INTERVAL = 0.05
#: Seconds over which the clients start, evenly spaced.
OVERLOAD_RAMP = 1.0
#: The burst of the token bucket the diagnostic USITS run declares: about half the queue the
#: target allows, capacity x (target - service) / 2.
OVERLOAD_BURST = 8
#: How far above the theoretical minimum the refusal rate may be, in points.
REFUSAL_SLACK = 0.05
#: SEDA's published rows (Arashi, target 1 s).
SEDA_ROWS = (("SEDA: no control", 7.5, 0.0), ("SEDA: with control", 0.978, 0.49))

# Part 4: spike -----------------------------------------------------------------------------------

SPIKE_SERVICE = 0.010
SPIKE_WORKERS = 4
SPIKE_BASE = 120.0
SPIKE_FACTOR = 10.0
SPIKE_TARGET = 0.100
SPIKE_INTERVAL = 0.05
#: The burst of the token bucket the diagnostic AIMD run declares (as OVERLOAD_BURST).
SPIKE_BURST = 20
SPIKE_WINDOW = 0.1
#: p90 back under target: this long a run of windows under it.
SPIKE_CALM = 1.0
#: Rate recovered: every window this long admits at least this share.
RECOVER_WINDOW = 0.5
RECOVER_SHARE = 0.95
SPIKE_SETTLE_TARGET = 0.5
SPIKE_RECOVER_TARGET = 2.0


# Configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """What one run measures."""

    parts: tuple[str, ...]
    backend: str
    quick: bool
    seed: int
    progress: bool
    # gnutella
    gnutella_seconds: float
    gnutella_warmup: float
    gnutella_modes: tuple[str, ...]
    gnutella_rates: tuple[float, ...]
    # batching
    batch_sizes: tuple[int, ...]
    batch_point: float
    batch_run: float
    # overload
    overload_runs: tuple[str, ...]
    overload_warmup: float
    overload_seconds: float
    uncontrolled_seconds: float
    # spike
    spike_before: float
    spike_seconds: float
    spike_after: float


def parse_args(argv: list[str] | None) -> tuple[Config, Path | None, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.controllers",
        description="aseda's feedback controllers in SEDA's experiments: a Gnutella worker "
        "pool, batching, overload (Arashi) and a spike (see the module doc).",
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs (~1.5 min)")
    parser.add_argument(
        "--only",
        metavar="PARTS",
        help=f"comma-separated parts to run, of {','.join(PARTS)} (all)",
    )
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--seed", type=int, default=1, help="seed of the arrivals (1)")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar, even on a terminal"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        default=Path(__file__).parent / "results",
        help="folder for the PNGs (benchmarks/results); 'none' to skip",
    )
    args = parser.parse_args(argv)
    parts: tuple[str, ...] = PARTS
    if args.only:
        parts = tuple(p.strip() for p in args.only.split(",") if p.strip())
        unknown = [p for p in parts if p not in PARTS]
        if unknown or not parts:
            parser.error(f"--only takes parts of {','.join(PARTS)}, not {args.only!r}")
        parts = tuple(p for p in PARTS if p in parts)
    quick = bool(args.quick)
    config = Config(
        parts=parts,
        backend=args.backend,
        quick=quick,
        seed=args.seed,
        progress=not args.no_progress,
        gnutella_seconds=2.5 if quick else 4.0,
        gnutella_warmup=0.5 if quick else 1.0,
        gnutella_modes=("fixed", "little") if quick else GNUTELLA_MODES,
        gnutella_rates=(100.0, 1000.0) if quick else GNUTELLA_RATES,
        batch_sizes=QUICK_BATCH_SIZES if quick else BATCH_SIZES,
        batch_point=0.7 if quick else 1.0,
        batch_run=8.0 if quick else 14.0,
        overload_runs=OVERLOAD_RUNS[:3] if quick else OVERLOAD_RUNS,
        overload_warmup=7.0 if quick else 10.0,
        overload_seconds=4.0 if quick else 16.0,
        uncontrolled_seconds=3.0 if quick else 8.0,
        spike_before=1.5 if quick else 3.0,
        spike_seconds=3.0 if quick else 10.0,
        spike_after=3.0 if quick else 4.0,
    )
    plots = None if str(args.plots).lower() == "none" else args.plots
    return config, args.json, plots


def run_on(backend: str, fn: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run ``fn`` on a fresh event loop of ``backend``, after a full collection."""

    async def guarded() -> T:
        with anyio.fail_after(timeout):
            return await fn()

    gc.collect()
    try:
        return anyio.run(guarded, backend=backend)
    except TimeoutError:
        name = getattr(getattr(fn, "func", fn), "__qualname__", repr(fn))
        raise SystemExit(
            f"controllers: {name} did not finish within {timeout:g} s (a hang?)"
        ) from None


# Results -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One target: what was measured, against what, and whether it was met.

    A ``reference`` check is printed for comparison and not counted.
    """

    part: str
    name: str
    value: str
    target: str
    passed: bool
    reference: bool = False

    @property
    def verdict(self) -> str:
        verdict = "PASS" if self.passed else "MISS"
        return f"ref {verdict}" if self.reference else verdict


def print_checks(checks: Sequence[Check]) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"  {c.verdict:<8} {c.name:<{width}}  {c.target:<30} {c.value}", flush=True)


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    value = seconds * 1e3
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def secs(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "never"
    return f"{seconds:.2f} s"


class Recorder:
    """Controller decisions of a run, as (perf_counter time, kind, value, reason)."""

    def __init__(self) -> None:
        self.decisions: list[tuple[float, str, float, str]] = []

    def __call__(self, stage: str, controller: str, action: aseda.Action) -> None:
        self.decisions.append((clock(), action.kind, float(action.value), action.reason))

    def relative(self, origin: float) -> list[tuple[float, str, float, str]]:
        return [(t - origin, kind, value, why) for t, kind, value, why in self.decisions]


def drop_expected(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # Runs end by cancelling their graph (a fixed worker's backlog would take minutes to
    # drain); the tables report the backlog instead of aseda's warning about it.
    if event_dict.get("event") == "graph cancelled; admitted events abandoned":
        raise structlog.DropEvent
    return event_dict


def progress_option(config: Config) -> bool | None:
    return None if config.progress else False


# Part 1: gnutella --------------------------------------------------------------------------------


def is_query(seq: int) -> bool:
    """Whether packet ``seq`` is a query: a fixed pseudo-random 15 % of the packets."""
    return ((seq * 2654435761) & 0xFFFFFFFF) < QUERY_SHARE * 2**32


def route(packet: tuple[int, bool]) -> int:
    """The router's handler, on a thread: a query blocks for 20 ms, a ping costs nothing."""
    seq, query = packet
    if query:
        time.sleep(QUERY_WORK)
    return seq


@dataclass
class GnutellaPoint:
    mode: str
    rate: float
    offered: float = 0.0
    served: float = 0.0
    mean: float = math.nan
    ping_mean: float = math.nan
    query_mean: float = math.nan
    p90: float = math.nan
    backlog: int = 0
    workers_max: int = 0
    workers_mean: float = math.nan
    workers_end: int = 0
    lag_p99: float = math.nan
    series: list[tuple[float, int, int]] = field(default_factory=list)  # (t, workers, queue)
    decisions: list[tuple[float, str, float, str]] = field(default_factory=list)


def pool_label(mode: str) -> str:
    if mode == "seda":
        return f'WorkerPool(mode="seda", threshold={GNUTELLA_THRESHOLD})'
    return f"WorkerPool(threshold={GNUTELLA_THRESHOLD}, utilization={GNUTELLA_UTILIZATION:g})"


def gnutella_stage(mode: str) -> tuple[aseda.Stage, list[aseda.Controller]]:
    if mode == "fixed":
        return aseda.stage(route, name="router", workers=1, capacity=aseda.UNBOUNDED), []
    stage = aseda.stage(
        route, name="router", workers=(1, GNUTELLA_MAX_WORKERS), capacity=aseda.UNBOUNDED
    )
    if mode == "seda":
        pool = aseda.WorkerPool(mode="seda", threshold=GNUTELLA_THRESHOLD)
    else:
        pool = aseda.WorkerPool(threshold=GNUTELLA_THRESHOLD, utilization=GNUTELLA_UTILIZATION)
    return stage, [pool]


async def measure_gnutella(mode: str, rate: float, config: Config, seed: int) -> GnutellaPoint:
    point = GnutellaPoint(mode, rate)
    stage, control = gnutella_stage(mode)
    recorder = Recorder()
    samples: list[tuple[float, int, int]] = []
    duration = config.gnutella_warmup + config.gnutella_seconds
    with anyio.CancelScope() as graph_scope:
        async with aseda.Graph(stage).run(
            control=control, control_interval=GNUTELLA_INTERVAL
        ) as running:
            running.add_decision_listener(recorder)

            def arrivals_over() -> None:
                at_end = running.stats()["router"]
                point.backlog = at_end.queue_length + at_end.in_flight

            async def sample_pool() -> None:
                while True:
                    now = running.stats()["router"]
                    samples.append((clock(), now.workers, now.queue_length))
                    await anyio.sleep(0.05)

            async with anyio.create_task_group() as tg:
                tg.start_soon(sample_pool)
                result = await open_loop(
                    graph_target(running, lambda client, seq: (seq, is_query(seq))),
                    rate,
                    duration,
                    seed=seed,
                    warmup=config.gnutella_warmup,
                    grace=1.0,
                    name=f"gnutella {mode} {rate:g}/s",
                    progress=progress_option(config),
                    on_end=arrivals_over,
                )
                tg.cancel_scope.cancel()
            graph_scope.cancel()  # the fixed worker's backlog would take long to drain
    assert result.samples is not None
    origin = result.samples.origin
    window = result.window
    point.offered = window.offered
    point.served = window.throughput
    point.p90 = window.latency.p90
    point.lag_p99 = window.lag.p99
    lo, hi = window.start, window.end
    pings: list[float] = []
    queries: list[float] = []
    for s in result.samples.items:
        if s.outcome is Outcome.OK and lo <= s.finished < hi:
            (queries if is_query(s.seq) else pings).append(s.latency)
    both = pings + queries
    point.mean = statistics.fmean(both) if both else math.nan
    point.ping_mean = statistics.fmean(pings) if pings else math.nan
    point.query_mean = statistics.fmean(queries) if queries else math.nan
    point.series = [(t - origin, w, q) for t, w, q in samples]
    point.decisions = recorder.relative(origin)
    in_run = [(t, w) for t, w, _ in point.series if t < duration]
    point.workers_max = max((w for _, w in in_run), default=1)
    point.workers_end = in_run[-1][1] if in_run else 1
    point.workers_mean = time_weighted(in_run, lo, hi)
    return point


def time_weighted(series: Sequence[tuple[float, int]], lo: float, hi: float) -> float:
    """The time-weighted mean of a step series over ``[lo, hi)`` (each value holds until the
    next sample)."""
    total = weight = 0.0
    for (t, value), (t_next, _) in zip(series, [*series[1:], (hi, 0)], strict=True):
        a, b = max(t, lo), min(t_next, hi)
        if b > a:
            total += value * (b - a)
            weight += b - a
    return total / weight if weight else math.nan


def gnutella(config: Config, plots: Path | None) -> tuple[list[Check], dict[str, Any]]:
    print(
        f"\n== 1. gnutella: blocking router, {QUERY_SHARE:.0%} of packets block "
        f"{QUERY_WORK * 1e3:g} ms; fixed 1 worker vs WorkerPool, workers=(1, "
        f"{GNUTELLA_MAX_WORKERS}), observed every {GNUTELLA_INTERVAL:g} s; "
        f"{config.gnutella_seconds:g} s per point, first {config.gnutella_warmup:g} s left out",
        flush=True,
    )
    points: list[GnutellaPoint] = []
    timeout = config.gnutella_warmup + config.gnutella_seconds + 60
    for k, rate in enumerate(config.gnutella_rates):
        for mode in config.gnutella_modes:
            measure = partial(measure_gnutella, mode, rate, config, config.seed * 100 + k)
            p = run_on(config.backend, measure, timeout)
            points.append(p)
            print(
                f"  {mode:<7} {rate:>5g}/s  mean {ms(p.mean):>6} ms (ping {ms(p.ping_mean)}, "
                f"query {ms(p.query_mean)})  p90 {ms(p.p90):>6} ms  workers max "
                f"{p.workers_max} mean {p.workers_mean:.1f}  backlog {p.backlog}  lag p99 "
                f"{ms(p.lag_p99)} ms",
                flush=True,
            )
    print(
        "\nmean latency, ms, of the packets served in the window (all / ping / query), and the"
        " pool\n"
    )
    print(
        f"{'stage':<16}{'rate/s':>7}{'served/s':>9}{'mean':>8}{'ping':>8}{'query':>8}"
        f"{'p90':>8}{'unserved':>9}{'max w':>6}{'mean w':>7}{'need':>6}"
    )
    for mode in config.gnutella_modes:
        for p in (p for p in points if p.mode == mode):
            label = {"fixed": "1 fixed worker", "seda": "pool, seda"}.get(mode, "pool, little")
            need = p.rate * QUERY_SHARE * QUERY_WORK
            print(
                f"{label:<16}{p.rate:>7g}{p.served:>9.0f}{ms(p.mean):>8}{ms(p.ping_mean):>8}"
                f"{ms(p.query_mean):>8}{ms(p.p90):>8}{p.backlog:>9}{p.workers_max:>6}"
                f"{p.workers_mean:>7.1f}{need:>6.2g}"
            )
        print()
    print(
        "SEDA (SOSP 2001), ping / query: 100/s single-threaded 13 / 27 ms; 400/s single 3.5 s /"
        " 6.4 s,\n  controlled 11 / 29 ms; 1000/s single out of memory, controlled 16 / 38 ms "
        "(2 threads added)\n"
    )
    top = max(GNUTELLA_RATES)
    by = {(p.mode, p.rate): p for p in points}
    need = top * QUERY_SHARE * QUERY_WORK
    allowed = math.ceil(need - 1e-9) + 2
    checks: list[Check] = []
    for mode, reference in (("little", False), ("seda", True)):
        found = by.get((mode, top))
        if found is None:
            continue
        p = found
        tag = pool_label(mode)
        checks.append(
            Check(
                "gnutella",
                f"{tag} at {top:g}/s: mean latency",
                f"{ms(p.mean)} ms",
                f"< {GNUTELLA_TARGET * 1e3:g} ms",
                p.mean < GNUTELLA_TARGET,
                reference,
            )
        )
        checks.append(
            Check(
                "gnutella",
                f"{tag} at {top:g}/s: workers",
                f"at most {p.workers_max} (mean {p.workers_mean:.1f}); Little's need {need:g}",
                f"<= need + 2 = {allowed}",
                p.workers_max <= allowed,
                reference,
            )
        )
    fixed = by.get(("fixed", top))
    if fixed is not None:
        checks.append(
            Check(
                "gnutella",
                f"1 fixed worker at {top:g}/s melts down",
                f"mean {ms(fixed.mean)} ms, {fixed.backlog} unserved at the end",
                f"mean > {MELTDOWN_MEAN:g} s, > {MELTDOWN_BACKLOG} unserved",
                fixed.mean > MELTDOWN_MEAN and fixed.backlog > MELTDOWN_BACKLOG,
            )
        )
    print("Targets:")
    print_checks(checks)
    if plots is not None:
        plot_gnutella(plots / "controllers-gnutella.png", points, config)
    data = {"points": [asdict(p) for p in points]}
    return checks, data


def plot_gnutella(path: Path, points: list[GnutellaPoint], config: Config) -> None:
    plt = pyplot()
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    styles = {
        "fixed": ("tab:red", "o", "1 fixed worker"),
        "seda": ("tab:orange", "s", pool_label("seda")),
        "little": ("tab:blue", "^", pool_label("little") + ", little mode"),
    }
    for mode in config.gnutella_modes:
        mine = sorted((p for p in points if p.mode == mode), key=lambda p: p.rate)
        color, marker, label = styles[mode]
        left.plot(
            [p.rate for p in mine],
            [p.mean * 1e3 for p in mine],
            "-",
            color=color,
            marker=marker,
            label=label,
        )
    left.axhline(GNUTELLA_TARGET * 1e3, ls="--", color="black", lw=1, label="target at 1000/s")
    left.set_xscale("log")
    left.set_yscale("log")
    left.xaxis.set_major_locator(FixedLocator(list(config.gnutella_rates)))
    left.xaxis.set_minor_locator(NullLocator())
    plain = FuncFormatter(lambda x, _: f"{x:g}")
    left.xaxis.set_major_formatter(plain)
    left.yaxis.set_major_formatter(plain)
    left.set_xlabel("offered load, packets/s (Poisson)")
    left.set_ylabel("mean latency of served packets, ms (log)")
    left.set_title("Mean latency per load (lower is better)")
    left.legend(fontsize=9, loc="upper left")
    top = max(GNUTELLA_RATES)
    for mode in config.gnutella_modes:
        if mode == "fixed":
            continue
        p = next((p for p in points if p.mode == mode and p.rate == top), None)
        if p is None:
            continue
        color, _, label = styles[mode]
        ts = [t for t, _, _ in p.series]
        right.step(ts, [w for _, w, _ in p.series], where="post", color=color, lw=2, label=label)
    need = top * QUERY_SHARE * QUERY_WORK
    right.axhline(need, ls=":", color="black", lw=1, label=f"Little's law: {need:g} busy")
    right.axhline(need + 2, ls="--", color="gray", lw=1, label=f"target: at most {need + 2:g}")
    right.axvspan(0, config.gnutella_warmup, color="0.5", alpha=0.1, lw=0)
    right.set_xlim(0, config.gnutella_warmup + config.gnutella_seconds)
    right.set_ylim(0, None)
    right.set_xlabel("time, s (shaded: left out of the means)")
    right.set_ylabel("workers (threads)")
    right.set_title(f"The pool at {top:g} packets/s")
    right.legend(fontsize=9, loc="lower right")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"Gnutella router: {QUERY_SHARE:.0%} of packets block {QUERY_WORK * 1e3:g} ms, "
        f"controller observes every {GNUTELLA_INTERVAL:g} s",
        fontsize=11,
    )
    save(fig, path)


# Part 2: batching --------------------------------------------------------------------------------


async def insert(rows: list[int]) -> list[int]:
    """A batch handler: a fixed cost per call (a round trip) plus a cost per event."""
    await anyio.sleep(BATCH_FIXED + BATCH_PER_EVENT * len(rows))
    return rows


def batch_stage(batch: int) -> aseda.Stage:
    return aseda.stage(insert, name="insert", batch=batch, capacity=BATCH_QUEUE, on_refuse="shed")


async def saturated_batch(
    batch: int,
    seconds: float,
    control: Sequence[aseda.Controller] = (),
    sample: list[tuple[float, int]] | None = None,
) -> float:
    """Events/s the stage serves with its queue kept full by a producer (and, into
    ``sample``, its batch every 50 ms from the start)."""
    warmup = 0.3
    served = math.nan
    with anyio.CancelScope() as graph_scope:
        async with aseda.Graph(batch_stage(batch)).run(
            control=control, control_interval=BATCH_INTERVAL
        ) as running:

            async def produce() -> None:
                i = 0
                while True:
                    await running.send(i, on_refuse="wait")
                    i += 1

            async def sample_batch(origin: float) -> None:
                assert sample is not None
                while True:
                    sample.append((clock() - origin, running.stats()["insert"].batch or 0))
                    await anyio.sleep(0.05)

            async with anyio.create_task_group() as tg:
                tg.start_soon(produce)
                if sample is not None:
                    tg.start_soon(sample_batch, clock())
                    await anyio.sleep(seconds)
                else:
                    await anyio.sleep(warmup)
                    start, done = clock(), running.stats()["insert"].processed
                    await anyio.sleep(seconds)
                    served = (running.stats()["insert"].processed - done) / (clock() - start)
                tg.cancel_scope.cancel()
            graph_scope.cancel()
    return served


async def offered_batch(
    batch: int,
    seconds: float,
    seed: int,
    control: Sequence[aseda.Controller] = (),
    sample: list[tuple[float, int]] | None = None,
    recorder: Recorder | None = None,
) -> Report:
    """The stage under an open-loop BATCH_LOAD: its report (and its batch over time)."""
    with anyio.CancelScope() as graph_scope:
        async with aseda.Graph(batch_stage(batch)).run(
            control=control, control_interval=BATCH_INTERVAL
        ) as running:
            if recorder is not None:
                running.add_decision_listener(recorder)
            times: list[tuple[float, int]] = []

            async def sample_batch() -> None:
                while True:
                    times.append((clock(), running.stats()["insert"].batch or 0))
                    await anyio.sleep(0.05)

            async with anyio.create_task_group() as tg:
                if sample is not None:
                    tg.start_soon(sample_batch)
                result = await open_loop(
                    graph_target(running),
                    BATCH_LOAD,
                    seconds,
                    seed=seed,
                    warmup=min(0.5, seconds / 3),
                    grace=0.5,
                    name=f"batching {batch}",
                    progress=False,
                )
                tg.cancel_scope.cancel()
            graph_scope.cancel()
    if sample is not None and result.samples is not None:
        sample.extend((t - result.samples.origin, b) for t, b in times)
    return result


@dataclass
class BatchRun:
    """One controller run: its label, load and batch over time."""

    label: str
    saturated: bool
    default: bool  # Batching() with every default, or with BATCHING_DROP and _RECOVER
    series: list[tuple[float, int]] = field(default_factory=list)  # (t, batch in force)
    decisions: list[tuple[float, str, float, str]] = field(default_factory=list)
    served: float = math.nan
    p90: float = math.nan
    settled: float = math.nan
    low: int = 0
    high: int = 0


@dataclass
class BatchingResult:
    capacity: dict[int, float] = field(default_factory=dict)  # saturated events/s per batch
    served: dict[int, float] = field(default_factory=dict)  # events/s at BATCH_LOAD
    peak: float = math.nan
    best: int = 0  # b*: smallest batch reaching 90 % of the peak at BATCH_LOAD
    saturated_peak: float = math.nan
    saturated_best: int = 0
    runs: list[BatchRun] = field(default_factory=list)


def settle(series: Sequence[tuple[float, int]], seconds: float) -> tuple[float, tuple[int, int]]:
    """The median and range of a batch series over the last third of the run."""
    tail = [b for t, b in series if t >= seconds * 2 / 3]
    if not tail:
        return math.nan, (0, 0)
    return statistics.median(tail), (min(tail), max(tail))


def smallest_reaching(throughput: dict[int, float], share: float) -> tuple[float, int]:
    peak = max(throughput.values())
    return peak, min(b for b, x in throughput.items() if x >= share * peak)


def batching(config: Config, plots: Path | None) -> tuple[list[Check], dict[str, Any]]:
    print(
        f"\n== 2. batching: batch handler {BATCH_FIXED * 1e3:g} ms per call + "
        f"{BATCH_PER_EVENT * 1e3:g} ms per event, 1 worker, batch_max {BATCH_MAX}; "
        f"Batching() observed every {BATCH_INTERVAL:g} s",
        flush=True,
    )
    r = BatchingResult()
    timeout = config.batch_run + 60
    for batch in config.batch_sizes:
        measure_cap = partial(saturated_batch, batch, config.batch_point)
        r.capacity[batch] = run_on(config.backend, measure_cap, timeout)
        seed = config.seed * 100 + batch
        measure_at = partial(offered_batch, batch, config.batch_point + 0.5, seed)
        report = run_on(config.backend, measure_at, timeout)
        r.served[batch] = report.window.throughput
        print(
            f"  batch {batch:>3}: saturated {r.capacity[batch]:6.0f}/s   at {BATCH_LOAD:g}/s "
            f"offered: served {r.served[batch]:6.0f}/s, p90 {ms(report.window.latency.p90)} ms",
            flush=True,
        )
    r.peak, r.best = smallest_reaching(r.served, BATCH_PEAK_SHARE)
    r.saturated_peak, r.saturated_best = smallest_reaching(r.capacity, BATCH_PEAK_SHARE)
    tuned = f"drop={BATCHING_DROP:g}, recover={BATCHING_RECOVER:g}"
    runs = [BatchRun(f"Batching({tuned}) at {BATCH_LOAD:g}/s", saturated=False, default=False)]
    if not config.quick:
        runs.append(BatchRun(f"Batching() at {BATCH_LOAD:g}/s", saturated=False, default=True))
        runs.append(BatchRun("Batching() saturated", saturated=True, default=True))
    for run in runs:
        controller = (
            aseda.Batching()
            if run.default
            else aseda.Batching(drop=BATCHING_DROP, recover=BATCHING_RECOVER)
        )
        recorder = Recorder()
        if run.saturated:
            measure = partial(
                saturated_batch, BATCH_MAX, config.batch_run, [controller], run.series
            )
            run_on(config.backend, measure, timeout)
        else:
            measure_run = partial(
                offered_batch,
                BATCH_MAX,
                config.batch_run,
                config.seed,
                [controller],
                run.series,
                recorder,
            )
            report = run_on(config.backend, measure_run, timeout)
            assert report.samples is not None
            run.decisions = recorder.relative(report.samples.origin)
            run.served = report.window.throughput
            run.p90 = report.window.latency.p90
        run.settled, (run.low, run.high) = settle(run.series, config.batch_run)
        print(
            f"  {run.label}: batch over the last third: median {run.settled:g}, range "
            f"{run.low}-{run.high}"
            + ("" if run.saturated else f"; served {run.served:.0f}/s, p90 {ms(run.p90)} ms"),
            flush=True,
        )
    r.runs = runs
    print(f"\nthroughput per fixed batch size, events/s (offered {BATCH_LOAD:g}/s)\n")
    print(f"{'batch':>6}{'saturated':>11}{'at ' + format(BATCH_LOAD, 'g') + '/s':>10}")
    for batch in config.batch_sizes:
        marks = []
        if batch == r.best:
            marks.append(f"b* at {BATCH_LOAD:g}/s")
        if batch == r.saturated_best:
            marks.append("b* saturated")
        print(
            f"{batch:>6}{r.capacity[batch]:>11.0f}{r.served[batch]:>10.0f}"
            + (f"   <- {', '.join(marks)}" if marks else "")
        )
    print(
        f"\nat {BATCH_LOAD:g}/s: peak {r.peak:.0f}/s, smallest batch reaching "
        f"{BATCH_PEAK_SHARE:.0%} of it b* = {r.best}; saturated: peak {r.saturated_peak:.0f}/s,"
        f" b* = {r.saturated_best}\n"
    )
    checks: list[Check] = []
    for run in runs:
        best = r.saturated_best if run.saturated else r.best
        lo, hi = best / BATCH_TOLERANCE, best * BATCH_TOLERANCE
        reference = run.saturated or run.default
        checks.append(
            Check(
                "batching",
                f"{run.label}: settled batch",
                f"median {run.settled:g} (range {run.low}-{run.high}), b* = {best}",
                f"within 2x of b*: {lo:g}-{hi:g}",
                lo <= run.settled <= hi,
                reference,
            )
        )
        if not run.saturated:
            checks.append(
                Check(
                    "batching",
                    f"{run.label}: served",
                    f"{run.served:.0f}/s",
                    f">= {BATCH_PEAK_SHARE:.0%} of peak {r.peak:.0f}/s",
                    run.served >= BATCH_PEAK_SHARE * r.peak,
                    reference,
                )
            )
    print("Targets:")
    print_checks(checks)
    if plots is not None:
        plot_batching(plots / "controllers-batching.png", r, config)
    return checks, asdict(r)


def plot_batching(path: Path, r: BatchingResult, config: Config) -> None:
    plt = pyplot()
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.6))
    sizes = list(config.batch_sizes)
    left.plot(sizes, [r.capacity[b] for b in sizes], "-o", color="tab:gray", label="saturated")
    left.plot(
        sizes,
        [r.served[b] for b in sizes],
        "-s",
        color="tab:blue",
        label=f"offered {BATCH_LOAD:g}/s (open loop)",
    )
    left.axhline(
        BATCH_PEAK_SHARE * r.peak,
        ls="--",
        color="tab:blue",
        lw=1,
        label=f"{BATCH_PEAK_SHARE:.0%} of the peak at {BATCH_LOAD:g}/s",
    )
    left.axvline(r.best, ls=":", color="tab:blue", lw=1.5, label=f"b* = {r.best}")
    left.axvspan(r.best / BATCH_TOLERANCE, r.best * BATCH_TOLERANCE, color="tab:blue", alpha=0.08)
    left.set_xscale("log", base=2)
    left.xaxis.set_major_locator(FixedLocator(sizes))
    left.xaxis.set_minor_locator(NullLocator())
    left.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    left.tick_params(axis="x", labelsize=8)
    left.set_xlabel("batch size (fixed)")
    left.set_ylabel("served events/s")
    left.set_title("Throughput per batch size")
    left.legend(fontsize=8.5, loc="upper left")
    for run in r.runs:
        color, width = ("tab:blue", 2.2) if not run.default else ("tab:purple", 1.2)
        if run.saturated:
            color, width = "tab:gray", 1.2
        if run.series:
            right.step(
                [t for t, _ in run.series],
                [b for _, b in run.series],
                where="post",
                color=color,
                lw=width,
                label=run.label,
            )
    right.axhspan(
        r.best / BATCH_TOLERANCE,
        r.best * BATCH_TOLERANCE,
        color="tab:blue",
        alpha=0.1,
        label=f"target: within 2x of b* = {r.best}",
    )
    right.axhline(r.best, ls=":", color="tab:blue", lw=1.5)
    right.axvspan(config.batch_run * 2 / 3, config.batch_run, color="0.5", alpha=0.08, lw=0)
    right.set_yscale("log", base=2)
    right.yaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    right.set_xlim(0, config.batch_run)
    right.set_xlabel("time, s (shaded: where the settled batch is taken)")
    right.set_ylabel("batch size in force (log)")
    right.set_title("The controller's batch size over time")
    right.legend(fontsize=8.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"Batching: {BATCH_FIXED * 1e3:g} ms per call + {BATCH_PER_EVENT * 1e3:g} ms per "
        f"event, 1 worker",
        fontsize=11,
    )
    save(fig, path)


# Part 3: overload --------------------------------------------------------------------------------


async def mail(request: int) -> int:
    """A stage of fixed capacity: one worker, 15 ms per request."""
    await anyio.sleep(OVERLOAD_SERVICE)
    return request


@dataclass
class OverloadRun:
    name: str
    offered: float = 0.0  # attempts/s in the window
    served: float = 0.0
    p90: float = math.nan
    mean: float = math.nan
    refused: float = 0.0
    minimum: float = math.nan  # 1 - capacity / offered
    unfinished: int = 0
    timeline: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    rates: list[tuple[float, float]] = field(default_factory=list)  # (t, bucket rate)


#: The runs of the overload part: name -> (controller factory, declared admission policy).
OVERLOAD_RUNS = ("none", "USITS", "AIMD", "USITS, bucket")


def overload_setup(name: str) -> tuple[list[aseda.Controller], aseda.TokenBucket | None]:
    """The controllers and the stage's own admission policy of one run.

    ``"USITS, bucket"`` is a diagnostic: USITS on a token bucket the stage declares, with a
    burst of OVERLOAD_BURST, instead of the one the runtime installs on the first cut.
    """
    if name.startswith("USITS"):
        usits = aseda.USITS(OVERLOAD_TARGET, period=OVERLOAD_SCALE)
        if name == "USITS":
            return [usits], None
        return [usits], aseda.TokenBucket(usits.rate_max, burst=OVERLOAD_BURST)
    if name == "AIMD":
        return [aseda.AIMD(OVERLOAD_TARGET)], None
    return [], None


async def arashi_clients(
    running: aseda.RunningGraph, duration: float, warmup: float, seed: int, name: str
) -> Report:
    """OVERLOAD_CLIENTS closed-loop clients: call, think, and after a refusal back off too.

    The toolkit's ``closed_loop()`` thinks the same after every outcome; here a refusal is
    recorded the moment it happens and the back-off follows it, so the samples are built with
    the toolkit's ``Sample`` and summarised by its ``Samples.report()``.
    """
    rng = random.Random(seed)
    items: list[Sample] = []
    call = running.call

    async def client(c: int) -> None:
        await anyio.sleep(OVERLOAD_RAMP * c / OVERLOAD_CLIENTS)
        seq = 0
        while (now := clock() - origin) < duration:
            sample = Sample(c, seq, now, started=now)
            items.append(sample)
            seq += 1
            try:
                await call(sample.seq)
            except aseda.Rejected as exc:
                sample.outcome, sample.detail = Outcome.REFUSED, exc.reason
            except Exception as exc:
                sample.outcome, sample.detail = Outcome.ERROR, type(exc).__name__
            else:
                sample.outcome = Outcome.OK
            sample.finished = clock() - origin
            pause = OVERLOAD_THINK
            if sample.outcome is Outcome.REFUSED:
                pause += rng.expovariate(1 / OVERLOAD_BACKOFF)
            await anyio.sleep(pause)

    async with anyio.create_task_group() as tg:
        origin = clock()
        for c in range(OVERLOAD_CLIENTS):
            tg.start_soon(client, c)
        await anyio.sleep(duration + 1.0)  # a second's grace for the calls in flight
        tg.cancel_scope.cancel()
    items.sort(key=lambda s: s.intended)
    samples = Samples("closed", OVERLOAD_CLIENTS, duration, items, origin)
    return samples.report(name=name, warmup=warmup, interval=1.0)


async def measure_overload(name: str, config: Config, seed: int) -> OverloadRun:
    run = OverloadRun(name)
    control, admission = overload_setup(name)
    stage = aseda.stage(mail, name="mail", workers=1, on_refuse="shed", admission=admission)
    recorder = Recorder()
    warmup = config.overload_warmup if control else 2.0
    seconds = config.overload_seconds if control else config.uncontrolled_seconds
    with anyio.CancelScope() as graph_scope:
        async with aseda.Graph(stage).run(
            control=control, control_interval=OVERLOAD_INTERVAL
        ) as running:
            running.add_decision_listener(recorder)
            result = await arashi_clients(running, warmup + seconds, warmup, seed, name)
            graph_scope.cancel()
    assert result.samples is not None
    w = result.window
    run.offered = w.offered
    run.served = w.throughput
    run.p90 = w.latency.p90
    run.mean = w.latency.mean
    run.refused = w.refused_share
    run.unfinished = w.unfinished
    run.timeline = [
        (i.start, i.offered, i.throughput, i.latency.p90, i.refused_share if i.requests else 0.0)
        for i in result.intervals
    ]
    decisions = recorder.relative(result.samples.origin)
    run.rates = [(t, v) for t, kind, v, _ in decisions if kind == "rate"]
    return run


def overload(config: Config, plots: Path | None) -> tuple[list[Check], dict[str, Any]]:
    print(
        f"\n== 3. overload (Arashi): {OVERLOAD_CLIENTS} closed-loop clients, think "
        f"{OVERLOAD_THINK * 1e3:g} ms, refused ones back off ~{OVERLOAD_BACKOFF:g} s; 1 worker x "
        f"{OVERLOAD_SERVICE * 1e3:g} ms; p90 target {OVERLOAD_TARGET:g} s (SEDA's 1 s x "
        f"{OVERLOAD_SCALE:g}); window {config.overload_seconds:g} s after "
        f"{config.overload_warmup:g} s warm-up",
        flush=True,
    )
    runs: list[OverloadRun] = []
    for k, name in enumerate(config.overload_runs):
        timeout = config.overload_warmup + config.overload_seconds + 60
        r = run_on(
            config.backend, partial(measure_overload, name, config, config.seed + k), timeout
        )
        runs.append(r)
        print(
            f"  {name:<13} attempts {r.offered:6.1f}/s  served {r.served:5.1f}/s  p90 "
            f"{ms(r.p90):>6} ms  refused {r.refused:6.1%}",
            flush=True,
        )
    capacity = runs[0].served
    for r in runs:
        r.minimum = max(0.0, 1 - capacity / r.offered) if r.offered else math.nan
    print(
        f"\ncapacity (served with no control, saturated): {capacity:.1f}/s; minimum refusal = "
        "1 - capacity / offered\n"
    )
    print(
        f"{'':<22}{'p90':>9}{'refused':>9}{'x target':>9}{'offered/s':>10}{'served/s':>9}"
        f"{'min refusal':>12}"
    )
    for label, p90, refused in SEDA_ROWS:
        print(f"{label:<22}{p90:>7.3g} s{refused:>9.0%}{p90 / 1.0:>9.2f}{'':>10}{'':>9}{'':>12}")
    for r in runs:
        label = "aseda: no control" if r.name == "none" else f"aseda: {r.name}"
        print(
            f"{label:<22}{r.p90:>7.3f} s{r.refused:>9.1%}{r.p90 / OVERLOAD_TARGET:>9.2f}"
            f"{r.offered:>10.1f}{r.served:>9.1f}{r.minimum:>12.1%}"
        )
    print()
    checks: list[Check] = []
    for r in runs[1:]:
        reference = r.name != "AIMD"  # USITS: SEDA's controller, the baseline
        checks.append(
            Check(
                "overload",
                f"{r.name}: p90",
                f"{r.p90:.3f} s",
                f"< {OVERLOAD_TARGET:g} s",
                r.p90 < OVERLOAD_TARGET,
                reference,
            )
        )
        checks.append(
            Check(
                "overload",
                f"{r.name}: refused",
                f"{r.refused:.1%} vs minimum {r.minimum:.1%} "
                f"({(r.refused - r.minimum) * 100:+.1f} points)",
                f"<= minimum + {REFUSAL_SLACK * 100:g} points",
                r.refused <= r.minimum + REFUSAL_SLACK,
                reference,
            )
        )
    none = runs[0]
    checks.append(
        Check(
            "overload",
            "no control: p90 over target",
            f"{none.p90:.3f} s = {none.p90 / OVERLOAD_TARGET:.1f}x target (SEDA: 7.5x)",
            "> target",
            none.p90 > OVERLOAD_TARGET,
            reference=True,
        )
    )
    print("Targets (USITS, SEDA's controller, and the diagnostic run, for reference):")
    print_checks(checks)
    if plots is not None:
        plot_overload(plots / "controllers-overload.png", runs, config, capacity)
    return checks, {"capacity": capacity, "runs": [asdict(r) for r in runs]}


def plot_overload(path: Path, runs: list[OverloadRun], config: Config, capacity: float) -> None:
    plt = pyplot()
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = {
        "none": "tab:red",
        "USITS": "tab:orange",
        "AIMD": "tab:blue",
        "USITS, bucket": "tab:green",
    }
    for r in runs:
        color = colors[r.name]
        label = "no control" if r.name == "none" else r.name
        edges = [t for t, *_ in r.timeline] + [r.timeline[-1][0] + 1.0] if r.timeline else []
        if not edges:
            continue
        p90s = [x[3] for x in r.timeline]  # nan (nothing served): a gap
        none = r.name == "none"
        left.stairs(
            p90s,
            edges,
            color=color,
            lw=2.6 if none else 1.8,
            ls="--" if none else "-",
            baseline=None,
            label=label,
            zorder=3 if none else 2,
        )
        mid.stairs([x[4] * 100 for x in r.timeline], edges, color=color, lw=1.8, baseline=None)
        if r.minimum == r.minimum and r.name != "none":
            mid.axhline(r.minimum * 100, ls=":", color=color, lw=1.2)
        if r.rates:
            ts = [t for t, _ in r.rates]
            right.step(ts, [v for _, v in r.rates], where="post", color=color, lw=1.8, label=label)
    left.axhline(OVERLOAD_TARGET, ls="--", color="black", lw=1, label="p90 target")
    left.set_yscale("log")
    left.set_ylabel("p90 response time, s (log)")
    left.set_title("p90 of served requests, per second")
    left.legend(fontsize=9)
    mid.set_ylabel("refused, % of attempts")
    mid.set_ylim(0, 100)
    mid.set_title("Refused (dotted: 1 - capacity / offered)")
    right.axhline(capacity, ls="--", color="black", lw=1, label=f"capacity {capacity:.0f}/s")
    right.set_yscale("log")
    right.set_ylabel("token bucket rate, requests/s (log)")
    right.set_title("The rate each controller set")
    right.legend(fontsize=9)
    end = config.overload_warmup + config.overload_seconds
    for ax in (left, mid, right):
        ax.axvspan(0, config.overload_warmup, color="0.5", alpha=0.1, lw=0)
        ax.set_xlim(0, end)
        ax.set_xlabel("time, s (shaded: warm-up)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"Overload: {OVERLOAD_CLIENTS} clients (think {OVERLOAD_THINK * 1e3:g} ms) against "
        f"{capacity:.0f} requests/s, p90 target {OVERLOAD_TARGET:g} s",
        fontsize=11,
    )
    save(fig, path)


# Part 4: spike -----------------------------------------------------------------------------------


async def page(request: int) -> int:
    await anyio.sleep(SPIKE_SERVICE)
    return request


@dataclass
class SpikeRun:
    name: str
    start: float
    end: float
    duration: float
    windows: list[tuple[float, float, float, float, float]] = field(
        default_factory=list
    )  # (start, offered/s, admitted/s, refused/s, p90 s)
    rates: list[tuple[float, float]] = field(default_factory=list)
    settle: float = math.nan
    recover: float = math.nan
    over_after: int = 0  # windows over target in the spike after settling
    spike_windows: int = 0
    peak_p90: float = math.nan
    spike_refused: float = math.nan
    lag_p99: float = math.nan


SPIKE_RUNS = ("AIMD", "USITS", "AIMD, bucket")


def spike_setup(name: str) -> tuple[list[aseda.Controller], aseda.TokenBucket | None]:
    """The controllers and the stage's own admission policy of one run.

    ``"AIMD, bucket"`` is a diagnostic: AIMD on a token bucket the stage declares, with a
    burst of SPIKE_BURST, instead of the one the runtime installs on the first cut.
    """
    if name == "USITS":
        return [aseda.USITS(SPIKE_TARGET)], None
    aimd = aseda.AIMD(SPIKE_TARGET)
    if name == "AIMD":
        return [aimd], None
    return [aimd], aseda.TokenBucket(aimd.rate_max, burst=SPIKE_BURST)


async def measure_spike(name: str, config: Config, seed: int) -> SpikeRun:
    start = config.spike_before
    end = start + config.spike_seconds
    duration = end + config.spike_after
    run = SpikeRun(name, start, end, duration)
    load = [
        Phase(0, duration, SPIKE_BASE, "base"),
        Phase(start, config.spike_seconds, SPIKE_BASE * SPIKE_FACTOR, "spike"),
    ]
    control, admission = spike_setup(name)
    stage = aseda.stage(
        page, name="page", workers=SPIKE_WORKERS, on_refuse="shed", admission=admission
    )
    recorder = Recorder()
    with anyio.CancelScope() as graph_scope:
        async with aseda.Graph(stage).run(
            control=control, control_interval=SPIKE_INTERVAL
        ) as running:
            running.add_decision_listener(recorder)
            result = await open_loop(
                graph_target(running),
                load,
                seed=seed,
                grace=1.0,
                interval=SPIKE_WINDOW,
                name=f"spike {name}",
                progress=progress_option(config),
            )
            graph_scope.cancel()
    assert result.samples is not None
    run.lag_p99 = result.window.lag.p99
    for w in result.intervals:
        run.windows.append(
            (
                w.start,
                w.offered,
                (w.requests - w.refused - w.errors - w.unfinished) / w.seconds,
                w.refused / w.seconds,
                w.latency.p90,
            )
        )
    run.rates = [
        (t, v) for t, kind, v, _ in recorder.relative(result.samples.origin) if kind == "rate"
    ]
    judge_spike(run, result)
    return run


def judge_spike(run: SpikeRun, result: Report) -> None:
    windows = run.windows
    calm = round(SPIKE_CALM / SPIKE_WINDOW)
    eps = 1e-9

    def under(k: int) -> bool:
        p90 = windows[k][4]
        return math.isnan(p90) or p90 <= SPIKE_TARGET

    first = next(k for k, w in enumerate(windows) if w[0] >= run.start - eps)
    last = next(k for k, w in enumerate(windows) if w[0] >= run.end - eps)
    run.settle = math.inf
    for k in range(first, last):
        if all(under(j) for j in range(k, min(k + calm, len(windows)))):
            run.settle = windows[k][0] - run.start
            run.over_after = sum(not under(j) for j in range(k, last))
            break
    run.spike_windows = last - first
    spike = [w[4] for w in windows[first:last] if not math.isnan(w[4])]
    run.peak_p90 = max(spike, default=math.nan)
    assert result.samples is not None
    spike_window = result.samples.window(run.start, run.end)
    run.spike_refused = spike_window.refused_share
    # Rate recovered: every RECOVER_WINDOW from some point on admits RECOVER_SHARE.
    span = round(RECOVER_WINDOW / SPIKE_WINDOW)
    intervals = result.intervals
    run.recover = math.inf
    for k in range(last, len(intervals) - span + 1):
        ok = True
        for j in range(k, len(intervals) - span + 1):
            chunk = intervals[j : j + span]
            requests = sum(w.requests for w in chunk)
            refused = sum(w.refused for w in chunk)
            if requests and refused > (1 - RECOVER_SHARE) * requests:
                ok = False
                break
        if ok:
            run.recover = intervals[k].start - run.end
            break


def spike(config: Config, plots: Path | None) -> tuple[list[Check], dict[str, Any]]:
    print(
        f"\n== 4. spike: open loop {SPIKE_BASE:g}/s, x{SPIKE_FACTOR:g} for "
        f"{config.spike_seconds:g} s from t = {config.spike_before:g} s; {SPIKE_WORKERS} "
        f"workers x {SPIKE_SERVICE * 1e3:g} ms; p90 target {SPIKE_TARGET * 1e3:g} ms; observed "
        f"every {SPIKE_INTERVAL:g} s; {SPIKE_WINDOW * 1e3:g} ms windows",
        flush=True,
    )
    runs: list[SpikeRun] = []
    for k, name in enumerate(SPIKE_RUNS[:2] if config.quick else SPIKE_RUNS):
        timeout = config.spike_before + config.spike_seconds + config.spike_after + 60
        r = run_on(config.backend, partial(measure_spike, name, config, config.seed + k), timeout)
        runs.append(r)
        print(
            f"  {name:<6} p90 back under target {secs(r.settle)} after the jump; rate recovered "
            f"{secs(r.recover)} after the end; spike: peak p90 {ms(r.peak_p90)} ms, refused "
            f"{r.spike_refused:.0%}; lag p99 {ms(r.lag_p99)} ms",
            flush=True,
        )
    print(
        f"\n{'controller':<12}{'p90 back under':>15}{'windows over after':>20}{'peak p90':>10}"
        f"{'refused in spike':>18}{'rate recovered':>16}"
    )
    for r in runs:
        over = f"{r.over_after} of {r.spike_windows}" if math.isfinite(r.settle) else "-"
        print(
            f"{r.name:<12}{secs(r.settle):>15}{over:>20}{ms(r.peak_p90) + ' ms':>10}"
            f"{r.spike_refused:>18.0%}{secs(r.recover):>16}"
        )
    print(
        "\nSEDA needed 1.58 s to recover from a 1.4x spike, DAGOR 0.5 s, Breakwater < 20 ms "
        "(Breakwater, OSDI 2020)\n"
    )
    checks: list[Check] = []
    for r in runs:
        reference = r.name != "AIMD"
        checks.append(
            Check(
                "spike",
                f"{r.name}: p90 back under target",
                f"{secs(r.settle)} after the jump",
                f"<= {SPIKE_SETTLE_TARGET:g} s",
                r.settle <= SPIKE_SETTLE_TARGET,
                reference,
            )
        )
        checks.append(
            Check(
                "spike",
                f"{r.name}: rate recovered",
                f"{secs(r.recover)} after the spike",
                f"<= {SPIKE_RECOVER_TARGET:g} s",
                r.recover <= SPIKE_RECOVER_TARGET,
                reference,
            )
        )
    print("Targets (USITS, SEDA's controller, and the diagnostic run, for reference):")
    print_checks(checks)
    if plots is not None:
        plot_spike(plots / "controllers-spike.png", runs)
    return checks, {"runs": [asdict(r) for r in runs]}


def plot_spike(path: Path, runs: list[SpikeRun]) -> None:
    plt = pyplot()
    fig, (top, mid, low, rate) = plt.subplots(
        4, 1, figsize=(12, 11), sharex=True, gridspec_kw={"height_ratios": [3, 2.4, 2, 2]}
    )
    colors = {"AIMD": "tab:blue", "USITS": "tab:orange", "AIMD, bucket": "tab:green"}
    first = runs[0]
    edges = [w[0] for w in first.windows] + [first.windows[-1][0] + SPIKE_WINDOW]
    mid.stairs(
        [w[1] for w in first.windows],
        edges,
        color="black",
        lw=1,
        alpha=0.45,
        baseline=None,
        label="offered",
    )
    for r in runs:
        color = colors[r.name]
        edges = [w[0] for w in r.windows] + [r.windows[-1][0] + SPIKE_WINDOW]
        p90s = [w[4] * 1e3 if not math.isnan(w[4]) else math.nan for w in r.windows]
        width = 1.2 if r.name == "AIMD, bucket" else 1.8
        top.stairs(p90s, edges, color=color, lw=width, baseline=None, label=r.name)
        mid.stairs(
            [w[2] for w in r.windows], edges, color=color, lw=width, baseline=None, label=r.name
        )
        low.stairs(
            [w[3] for w in r.windows], edges, color=color, lw=width, baseline=None, label=r.name
        )
        if r.rates:
            ts = [t for t, _ in r.rates] + [r.duration]
            vs = [v for _, v in r.rates]
            rate.step(ts, [*vs, vs[-1]], where="post", color=color, lw=width, label=r.name)
    top.axhline(SPIKE_TARGET * 1e3, ls="--", color="black", lw=1, label="p90 target")
    top.set_yscale("log")
    top.set_ylabel("p90, ms (log)")
    top.set_title(
        f"p90 of the requests served in each {SPIKE_WINDOW * 1e3:g} ms window "
        "(latency from the intended send time)"
    )
    mid.set_yscale("symlog", linthresh=100)
    mid.set_ylim(0, SPIKE_BASE * SPIKE_FACTOR * 1.6)
    mid.set_ylabel("requests/s (symlog)")
    mid.set_title("Admitted requests/s (by intended send time), and the offered load")
    low.set_ylabel("refused/s")
    low.set_title("Refused requests/s")
    rate.set_yscale("log")
    rate.set_ylabel("events/s (log)")
    rate.set_title("The token bucket's rate, as each controller set it")
    rate.set_xlabel("time, s (shaded: the spike)")
    for ax in (top, mid, low, rate):
        ax.axvspan(first.start, first.end, color="0.5", alpha=0.1, lw=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8.5, loc="upper left", ncol=5, framealpha=0.9)
    rate.set_xlim(0, first.duration)
    fig.suptitle(
        f"Spike: {SPIKE_BASE:g}/s jumps x{SPIKE_FACTOR:g} for {first.end - first.start:g} s; "
        f"{SPIKE_WORKERS} workers x {SPIKE_SERVICE * 1e3:g} ms (~390/s); observed every "
        f"{SPIKE_INTERVAL:g} s",
        fontsize=11,
    )
    save(fig, path)


# Output ------------------------------------------------------------------------------------------


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    pyplot().close(fig)
    print(f"\nwrote {path}", flush=True)


def environment() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for module in ("aseda", "anyio", "matplotlib"):
        try:
            versions[module] = version(module)
        except PackageNotFoundError:
            versions[module] = "not installed"
    return versions


def jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    config, json_path, plots = parse_args(argv)
    processors = structlog.get_config()["processors"]
    structlog.configure(
        processors=[drop_expected, *processors],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    env = environment()
    print(
        f"aseda controllers benchmark: parts {', '.join(config.parts)}; backend "
        f"{config.backend}{' (quick)' if config.quick else ''}",
        flush=True,
    )
    print("  " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    started = clock()
    parts: dict[str, Callable[[Config, Path | None], tuple[list[Check], dict[str, Any]]]] = {
        "gnutella": gnutella,
        "batching": batching,
        "overload": overload,
        "spike": spike,
    }
    checks: list[Check] = []
    data: dict[str, Any] = {}
    for name in config.parts:
        began = clock()
        part_checks, part_data = parts[name](config, plots)
        checks += part_checks
        data[name] = part_data
        print(f"({name}: {clock() - began:.0f} s)", flush=True)
    seconds = clock() - started
    targets = [c for c in checks if not c.reference]
    print("\n" + "=" * 100)
    print(f"SUMMARY: {sum(c.passed for c in targets)} of {len(targets)} targets met")
    print_checks(checks)
    print(f"\nwall time {seconds:.0f} s", flush=True)
    if json_path is not None:
        document = {
            "config": asdict(config),
            "environment": env,
            "wall_seconds": round(seconds, 1),
            "checks": [asdict(c) for c in checks],
            "parts": data,
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(jsonable(document), indent=1) + "\n")
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
