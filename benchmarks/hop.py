"""The cost of a hop: aseda against hand-written pipelines, on asyncio, uvloop and trio.

Run by hand from the repository root (it is a benchmark, not a test)::

    python -m benchmarks.hop                  # defaults: --events 100000 --hops 4 --repeat 3
    python -m benchmarks.hop --quick          # a ~20 s smoke run
    python -m benchmarks.hop --json out.json  # also write every sample as JSON

Every number comes from this one process. Each measurement runs on a fresh event loop
(``anyio.run``) after ``gc.collect()``, is timed with ``time.perf_counter``, and is repeated
``--repeat`` times, round robin over backends and pipelines so that a burst of noise on this
shared machine hits one repetition of everything rather than every repetition of one thing.
Each table cell is the lowest of its repetitions (for latency, the lowest median and, on its
own, the lowest p99). Progress lines come first, one per measurement; the report follows.
Lower is better everywhere except in the ratio lines, where a ratio is "how many times cheaper
aseda is" (the baseline's cost divided by aseda's).

1. Saturated throughput, in microseconds per event per hop: ``--events`` events through
   ``--hops`` trivial hops (``async def ident(x): return x``), from start to fully drained,
   divided by events x hops. Pipelines:

   * aseda: a graph of K default stages; the producer awaits ``running.send(i)`` for each
     event, then leaves ``async with graph.run()``, which drains.
   * asyncio.Queue: K queues (maxsize 1024) with one task each doing ``get``, ``ident``,
     ``put`` into the next queue; the task on the last queue is the sink (it calls ``ident``
     and drops the result, as aseda's last stage does), so both have K queues and K tasks.
     The producer awaits ``put``; a sentinel stops the tasks. asyncio and uvloop only.
   * naive anyio: the same shape with memory object streams (buffer 1024), ``async for`` and
     ``await send.send(...)``; closing the producer's stream stops the tasks.
   * pypeln: ``pl.task.map(ident, stage, workers=1, maxsize=1024)`` chained K times, consumed
     with ``async for`` inside the running loop, on ``min(events, 20000)`` events because it
     is slow. pypeln feeds a plain iterable such as ``range`` from a helper thread, one
     ``run_coroutine_threadsafe`` per element, which is its bottleneck; the "async source"
     row feeds it an async generator instead, the fairer comparison. asyncio only.

2. Light-load latency: one ``await running.call(i)`` at a time through 4 trivial stages, after
   a warm-up; the median and the 99th percentile of the per-call times, in microseconds. For
   scale, the same through 4 hand-written asyncio.Queue hops whose last one resolves a Future
   (asyncio and uvloop; no target): what one wake-up per hop costs on this machine.

3. Blocking stage (a plain ``def f(x): return x`` runs on aseda's offload threads):

   a. one call at a time: ``await running.call(i)`` through a graph of that one stage, against
      ``await loop.run_in_executor(pool, f, i)`` (a one-thread pool; asyncio only) and
      ``await anyio.to_thread.run_sync(f, i)``: microseconds per call.
   b. saturated: ``--events`` sends through the blocking stage, whose worker hands up to 64
      queued events to its thread per hop, and through a ``batch=64`` blocking stage (the
      handler takes and returns a list): microseconds per event.

4. Memory, from ``tracemalloc``: bytes per queued event (a stage's only worker waits on an
   ``anyio.Event`` inside its handler while 10000 ints, created beforehand so that only aseda's
   own cost is counted, are queued with ``send_nowait``) and bytes per idle stage (a started
   graph of 100 idle stages against one of 1, difference / 99; split into the definition, i.e.
   the Stage and Graph objects, and the running state: queue, worker task, bookkeeping).

Each target line ends in PASS or MISS. On a shared two-core machine, throughput moves by
10-20 % from run to run and single-call latencies and thread round trips by up to 2x; compare
ratios within one run rather than absolute numbers across runs. A measurement that does not
finish within ``--timeout`` seconds (a hang) stops the benchmark with its name.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import logging
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import structlog
from anyio.abc import ObjectReceiveStream, ObjectSendStream

import aseda

T = TypeVar("T")

#: Buffer of every hand-written queue or stream, the same as aseda's default capacity.
BUFFER = 1024
#: pypeln runs at ~30 us per hop, so it gets at most this many events.
PYPELN_EVENTS = 20_000
#: Stages of the light-load latency graph.
LATENCY_HOPS = 4
#: Events queued behind a blocked worker for the bytes-per-queued-event reading.
QUEUED_EVENTS = 10_000
#: Stages of the larger graph for the bytes-per-idle-stage reading.
IDLE_STAGES = 100
#: The batch size of the batched blocking stage (aseda's per-event chunk is 64 too).
OFFLOAD_BATCH = 64

clock = time.perf_counter


# Configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """An anyio backend, with the label the tables use."""

    label: str
    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def run(self, fn: Callable[[], Awaitable[T]], timeout: float) -> T:
        """Run ``fn`` on a fresh event loop of this backend, after a full collection."""

        async def guarded() -> T:
            with anyio.fail_after(timeout):
                return await fn()

        gc.collect()
        try:
            return anyio.run(guarded, backend=self.name, backend_options=dict(self.options))
        except TimeoutError:
            what = getattr(fn, "func", fn)
            name = getattr(what, "__qualname__", repr(what))
            raise SystemExit(
                f"hop: {name} on {self.label} did not finish within {timeout:g} s (a hang?)"
            ) from None


ASYNCIO = Backend("asyncio", "asyncio")
UVLOOP = Backend("uvloop", "asyncio", (("use_uvloop", True),))
TRIO = Backend("trio", "trio")


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True)
class Config:
    """What one run measures."""

    events: int
    hops: int
    repeat: int
    pypeln_events: int
    latency_calls: int
    latency_warmup: int
    offload_calls: int
    offload_warmup: int
    timeout: float
    quick: bool


def parse_args(argv: list[str] | None) -> tuple[Config, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hop",
        description="aseda's cost per hop against hand-written pipelines (see the module doc).",
    )
    parser.add_argument("--events", type=int, help="events per throughput run (100000)")
    parser.add_argument("--hops", type=int, default=4, help="trivial stages in a row (4)")
    parser.add_argument("--repeat", type=int, help="repetitions, the best is kept (3)")
    parser.add_argument("--quick", action="store_true", help="a ~20 s smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results as JSON")
    parser.add_argument(
        "--timeout", type=float, default=120, help="seconds before one measurement is a hang (120)"
    )
    args = parser.parse_args(argv)
    events = args.events if args.events is not None else (20_000 if args.quick else 100_000)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    for name, value in (("--events", events), ("--hops", args.hops), ("--repeat", repeat)):
        if value < 1:
            parser.error(f"{name} must be at least 1, not {value}")
    config = Config(
        events=events,
        hops=args.hops,
        repeat=repeat,
        pypeln_events=min(events, PYPELN_EVENTS),
        latency_calls=1000 if args.quick else 5000,
        latency_warmup=100 if args.quick else 500,
        offload_calls=500 if args.quick else 3000,
        offload_warmup=50 if args.quick else 300,
        timeout=args.timeout,
        quick=args.quick,
    )
    return config, args.json


# Results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One target: what was measured, against what, and whether it was met."""

    name: str
    value: str
    target: str
    passed: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


class Results:
    """Every sample of every metric on every backend; the best is the lowest."""

    def __init__(self) -> None:
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.checks: list[Check] = []

    def add(self, metric: str, backend: str, value: float) -> None:
        self.samples.setdefault(metric, {}).setdefault(backend, []).append(value)

    def best(self, metric: str, backend: str) -> float | None:
        values = self.samples.get(metric, {}).get(backend)
        return min(values) if values else None

    def check(self, name: str, value: str, target: str, passed: bool) -> str:
        self.checks.append(Check(name, value, target, passed))
        return "PASS" if passed else "MISS"


def progress(section: str, backend: str, what: str, run: int, runs: int, text: str) -> None:
    print(f"  [{section}] {backend:<7} {what:<38} {run}/{runs}  {text}", flush=True)


# 1. Saturated throughput -----------------------------------------------------------------------


async def ident(x: int) -> int:
    return x


def chain(hops: int, prefix: str = "hop") -> aseda.Graph:
    """A graph of ``hops`` trivial stages in a row, with default settings."""
    stages = [aseda.stage(name=f"{prefix}{i}")(ident) for i in range(hops)]
    flow: aseda.Stage | aseda.Flow = stages[0]
    for stage in stages[1:]:
        flow = flow >> stage
    return aseda.Graph(flow)


def expect_processed(running: aseda.RunningGraph, events: int) -> None:
    for stage in running.stats().stages:
        if stage.processed != events or stage.failed:
            raise RuntimeError(f"stage {stage.name!r} processed {stage.processed} of {events}")


async def aseda_pipeline(events: int, hops: int) -> float:
    graph = chain(hops)
    start = clock()
    async with graph.run() as running:
        send = running.send
        for i in range(events):
            await send(i)
    elapsed = clock() - start
    expect_processed(running, events)
    return elapsed


_STOP = object()


async def asyncio_queue_pipeline(events: int, hops: int) -> float:
    queues: list[asyncio.Queue[object]] = [asyncio.Queue(maxsize=BUFFER) for _ in range(hops)]
    seen = 0

    async def hop(q_in: asyncio.Queue[object], q_out: asyncio.Queue[object]) -> None:
        while True:
            x = await q_in.get()
            if x is _STOP:
                await q_out.put(_STOP)
                return
            y = await ident(x)  # type: ignore[arg-type]
            await q_out.put(y)

    async def sink(q_in: asyncio.Queue[object]) -> None:
        nonlocal seen
        while True:
            x = await q_in.get()
            if x is _STOP:
                return
            await ident(x)  # type: ignore[arg-type]
            seen += 1

    start = clock()
    tasks = [asyncio.create_task(hop(queues[i], queues[i + 1])) for i in range(hops - 1)]
    tasks.append(asyncio.create_task(sink(queues[-1])))
    put = queues[0].put
    for i in range(events):
        await put(i)
    await put(_STOP)
    await asyncio.gather(*tasks)
    elapsed = clock() - start
    if seen != events:
        raise RuntimeError(f"asyncio.Queue pipeline delivered {seen} of {events}")
    return elapsed


async def naive_anyio_pipeline(events: int, hops: int) -> float:
    seen = 0

    async def hop(receive: ObjectReceiveStream[int], send: ObjectSendStream[int]) -> None:
        async with receive, send:
            async for x in receive:
                await send.send(await ident(x))

    async def sink(receive: ObjectReceiveStream[int]) -> None:
        nonlocal seen
        async with receive:
            async for x in receive:
                await ident(x)
                seen += 1

    start = clock()
    async with anyio.create_task_group() as tg:
        first, receive = anyio.create_memory_object_stream[int](BUFFER)
        for _ in range(hops - 1):
            send, next_receive = anyio.create_memory_object_stream[int](BUFFER)
            tg.start_soon(hop, receive, send)
            receive = next_receive
        tg.start_soon(sink, receive)
        async with first:
            for i in range(events):
                await first.send(i)
    elapsed = clock() - start
    if seen != events:
        raise RuntimeError(f"anyio stream pipeline delivered {seen} of {events}")
    return elapsed


async def _numbers(events: int) -> AsyncIterator[int]:
    for i in range(events):
        yield i


async def pypeln_pipeline(events: int, hops: int, *, async_source: bool = False) -> float:
    import pypeln as pl  # type: ignore[import-untyped]  # optional, and slow to import

    stage: Any = _numbers(events) if async_source else range(events)
    for _ in range(hops):
        stage = pl.task.map(ident, stage, workers=1, maxsize=BUFFER)
    seen = 0
    start = clock()
    async for _ in stage:
        seen += 1
    elapsed = clock() - start
    if seen != events:
        raise RuntimeError(f"pypeln pipeline delivered {seen} of {events}")
    return elapsed


@dataclass(frozen=True)
class Pipeline:
    key: str
    label: str
    run: Callable[[int, int], Awaitable[float]]
    backends: tuple[Backend, ...]
    events: int


def throughput(config: Config, backends: list[Backend], results: Results) -> list[Pipeline]:
    on_asyncio = tuple(b for b in backends if b.name == "asyncio")
    pipelines = [
        Pipeline("aseda", "aseda", aseda_pipeline, tuple(backends), config.events),
        Pipeline("queue", "asyncio.Queue", asyncio_queue_pipeline, on_asyncio, config.events),
        Pipeline(
            "naive", "naive anyio streams", naive_anyio_pipeline, tuple(backends), config.events
        ),
    ]
    if installed("pypeln"):
        n = config.pypeln_events
        pipelines += [
            Pipeline(
                "pypeln", f"pypeln task, range source ({n} ev)", pypeln_pipeline, (ASYNCIO,), n
            ),
            Pipeline(
                "pypeln_async",
                f"pypeln task, async source ({n} ev)",
                partial(pypeln_pipeline, async_source=True),
                (ASYNCIO,),
                n,
            ),
        ]
    for r in range(config.repeat):
        for backend in backends:
            for p in pipelines:
                if backend not in p.backends:
                    continue
                seconds = backend.run(partial(p.run, p.events, config.hops), config.timeout)
                us = seconds / (p.events * config.hops) * 1e6
                results.add(f"throughput/{p.key}", backend.label, us)
                progress(
                    "1", backend.label, p.label, r + 1, config.repeat, f"{us:8.3f} us/event/hop"
                )
    return pipelines


# 2. Light-load latency -------------------------------------------------------------------------


async def aseda_latency(calls: int, warmup: int) -> list[float]:
    graph = chain(LATENCY_HOPS)
    samples: list[float] = []
    wrong = 0
    async with graph.run() as running:
        call = running.call
        for i in range(warmup):
            await call(i)
        for i in range(calls):
            start = clock()
            value = await call(i)
            samples.append(clock() - start)
            wrong += value != i
    if wrong:
        raise RuntimeError(f"{wrong} calls returned the wrong value")
    return samples


async def queue_latency(calls: int, warmup: int) -> list[float]:
    """The hand-written reference: asyncio.Queue hops, the last one resolves a Future."""
    loop = asyncio.get_running_loop()
    Message = tuple[int, asyncio.Future[int]]
    queues: list[asyncio.Queue[Message]] = [
        asyncio.Queue(maxsize=BUFFER) for _ in range(LATENCY_HOPS)
    ]

    async def hop(q_in: asyncio.Queue[Message], q_out: asyncio.Queue[Message] | None) -> None:
        while True:
            x, reply = await q_in.get()
            y = await ident(x)
            if q_out is None:
                reply.set_result(y)
            else:
                await q_out.put((y, reply))

    outs: list[asyncio.Queue[Message] | None] = [*queues[1:], None]
    tasks = [
        asyncio.create_task(hop(q_in, q_out)) for q_in, q_out in zip(queues, outs, strict=True)
    ]
    samples: list[float] = []
    put = queues[0].put
    try:
        for i in range(warmup + calls):
            start = clock()
            reply: asyncio.Future[int] = loop.create_future()
            await put((i, reply))
            await reply
            samples.append(clock() - start)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return samples[warmup:]


def latency(config: Config, backends: list[Backend], results: Results) -> None:
    measures: list[tuple[str, str, Callable[[int, int], Awaitable[list[float]]], bool]] = [
        # (metric, label, measure, asyncio only)
        ("latency", f"aseda call(), {LATENCY_HOPS} hops", aseda_latency, False),
        ("latency_ref", "asyncio.Queue + Future (reference)", queue_latency, True),
    ]
    for r in range(config.repeat):
        for backend in backends:
            for metric, label, measure, asyncio_only in measures:
                if asyncio_only and backend.name != "asyncio":
                    continue
                calls = partial(measure, config.latency_calls, config.latency_warmup)
                samples = backend.run(calls, config.timeout)
                median = statistics.median(samples) * 1e6
                p99 = statistics.quantiles(samples, n=100)[98] * 1e6
                results.add(f"{metric}/median", backend.label, median)
                results.add(f"{metric}/p99", backend.label, p99)
                progress(
                    "2",
                    backend.label,
                    label,
                    r + 1,
                    config.repeat,
                    f"median {median:6.1f} us   p99 {p99:6.1f} us",
                )


# 3. Blocking stage -----------------------------------------------------------------------------


def f(x: int) -> int:
    return x


def f_batch(xs: list[int]) -> list[int]:
    return xs


async def aseda_offload_calls(calls: int, warmup: int) -> float:
    graph = aseda.Graph(aseda.stage(name="f")(f))
    async with graph.run() as running:
        call = running.call
        for i in range(warmup):
            await call(i)
        start = clock()
        for i in range(calls):
            await call(i)
        elapsed = clock() - start
    return elapsed / calls


async def executor_calls(calls: int, warmup: int) -> float:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1) as pool:
        for i in range(warmup):
            await loop.run_in_executor(pool, f, i)
        start = clock()
        for i in range(calls):
            await loop.run_in_executor(pool, f, i)
        elapsed = clock() - start
    return elapsed / calls


async def to_thread_calls(calls: int, warmup: int) -> float:
    run_sync = anyio.to_thread.run_sync
    for i in range(warmup):
        await run_sync(f, i)
    start = clock()
    for i in range(calls):
        await run_sync(f, i)
    return (clock() - start) / calls


async def aseda_offload_saturated(events: int, batch: int | None) -> float:
    handler = f if batch is None else f_batch
    graph = aseda.Graph(aseda.stage(name="offload", batch=batch)(handler))
    start = clock()
    async with graph.run() as running:
        send = running.send
        for i in range(events):
            await send(i)
    elapsed = clock() - start
    expect_processed(running, events)
    return elapsed / events


def offload(config: Config, backends: list[Backend], results: Results) -> None:
    n, warm = config.offload_calls, config.offload_warmup
    measures: list[tuple[str, str, Callable[[], Awaitable[float]], bool]] = [
        # (metric, label, measure, asyncio only)
        ("offload_call/aseda", "aseda call()", partial(aseda_offload_calls, n, warm), False),
        ("offload_call/executor", "loop.run_in_executor", partial(executor_calls, n, warm), True),
        (
            "offload_call/to_thread",
            "anyio.to_thread.run_sync",
            partial(to_thread_calls, n, warm),
            False,
        ),
        (
            "offload_batch/each",
            "aseda blocking, up to 64/hop",
            partial(aseda_offload_saturated, config.events, None),
            False,
        ),
        (
            "offload_batch/batch",
            f"aseda blocking, batch={OFFLOAD_BATCH}",
            partial(aseda_offload_saturated, config.events, OFFLOAD_BATCH),
            False,
        ),
    ]
    for r in range(config.repeat):
        for backend in backends:
            for metric, label, measure, asyncio_only in measures:
                if asyncio_only and backend.name != "asyncio":
                    continue
                us = backend.run(measure, config.timeout) * 1e6
                results.add(metric, backend.label, us)
                unit = "us/call" if metric.startswith("offload_call") else "us/event"
                progress("3", backend.label, label, r + 1, config.repeat, f"{us:8.3f} {unit}")


# 4. Memory -------------------------------------------------------------------------------------


def traced() -> int:
    return tracemalloc.get_traced_memory()[0]


async def queued_event_bytes(count: int) -> float:
    entered, release = anyio.Event(), anyio.Event()

    async def hold(x: int) -> int:
        entered.set()
        await release.wait()
        return x

    graph = aseda.Graph(aseda.stage(name="hold", capacity=count)(hold))
    values = list(range(1_000_000, 1_000_000 + count))  # the events exist before we measure
    async with graph.run() as running:
        send_nowait = running.send_nowait
        send_nowait(0)
        await entered.wait()  # the only worker now holds event 0; the queue is empty
        gc.collect()
        tracemalloc.start()
        try:
            before = traced()
            for value in values:
                send_nowait(value)
            after = traced()
        finally:
            tracemalloc.stop()
        release.set()
    expect_processed(running, count + 1)
    return (after - before) / count


async def idle_graph_bytes(stages: int) -> tuple[int, int]:
    """Bytes of a started, idle graph of ``stages`` stages: (definition, running state)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = traced()
        graph = chain(stages, prefix="idle")
        built = traced()
        async with graph.run() as running:
            await anyio.sleep(0.02)  # every worker starts and parks on its empty queue
            idle = traced()
            if sum(s.workers for s in running.stats().stages) != stages:
                raise RuntimeError("not every worker started")
    finally:
        tracemalloc.stop()
    return built - base, idle - built


def memory(config: Config, backends: list[Backend], results: Results) -> None:
    for r in range(config.repeat):
        for backend in backends:
            per_event = backend.run(partial(queued_event_bytes, QUEUED_EVENTS), config.timeout)
            results.add("memory/queued_event", backend.label, per_event)
            progress(
                "4",
                backend.label,
                f"queued event ({QUEUED_EVENTS} queued)",
                r + 1,
                config.repeat,
                f"{per_event:8.1f} bytes/event",
            )
            backend.run(partial(idle_graph_bytes, 1), config.timeout)  # one-time allocations
            small_def, small_run = backend.run(partial(idle_graph_bytes, 1), config.timeout)
            big_def, big_run = backend.run(partial(idle_graph_bytes, IDLE_STAGES), config.timeout)
            definition = (big_def - small_def) / (IDLE_STAGES - 1)
            running = (big_run - small_run) / (IDLE_STAGES - 1)
            results.add("memory/idle_stage", backend.label, definition + running)
            results.add("memory/idle_stage_definition", backend.label, definition)
            results.add("memory/idle_stage_running", backend.label, running)
            progress(
                "4",
                backend.label,
                f"idle stage ({IDLE_STAGES} vs 1 stages)",
                r + 1,
                config.repeat,
                f"{definition + running:8.0f} bytes/stage ({definition:.0f} definition"
                f" + {running:.0f} running)",
            )


# Report ----------------------------------------------------------------------------------------


def cell(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(
    results: Results,
    title: str,
    rows: list[tuple[str, str]],
    backends: list[Backend],
    digits: int,
) -> None:
    width = max(len(label) for _, label in rows) + 2
    print(f"\n{title}")
    print(" " * width + "".join(f"{b.label:>10}" for b in backends))
    for metric, label in rows:
        cells = (cell(results.best(metric, b.label), digits) for b in backends)
        print(f"{label:<{width}}" + "".join(f"{c:>10}" for c in cells))


def ratio(results: Results, baseline: str, metric: str, backend: str) -> float | None:
    base, ours = results.best(baseline, backend), results.best(metric, backend)
    return None if base is None or ours is None else base / ours


def ratio_line(
    results: Results,
    name: str,
    baseline: str,
    backends: list[Backend],
    checked: list[Backend],
    target: float,
) -> None:
    """Print aseda's advantage over ``baseline`` per backend and check it on ``checked``."""
    parts: list[str] = []
    ok = True
    for backend in backends:
        value = ratio(results, baseline, "throughput/aseda", backend.label)
        if value is None:
            continue
        parts.append(f"{backend.label} {value:5.1f}x")
        if backend in checked:
            ok &= value >= target
    if not parts:
        return
    where = "on every backend" if len(checked) > 1 else f"on {checked[0].label}"
    verdict = results.check(name, ", ".join(parts), f">= {target:g}x {where}", ok)
    print(f"  {name:<38} {', '.join(parts):<42} target >= {target:g}x {where:<17} {verdict}")


def report(
    config: Config, backends: list[Backend], pipelines: list[Pipeline], results: Results
) -> None:
    by_label = {b.label: b for b in backends}
    asyncio_like = [b for b in backends if b.name == "asyncio"]
    print("\n" + "=" * 100)
    print(f"RESULTS (best of {config.repeat}; lower is better except ratios)")
    table(
        results,
        f"1. Saturated throughput, us per event per hop ({config.events} events, "
        f"{config.hops} trivial hops)",
        [(f"throughput/{p.key}", p.label) for p in pipelines],
        backends,
        3,
    )
    print("\n   aseda is N times cheaper than (baseline us / aseda us):")
    ratio_line(results, "vs asyncio.Queue", "throughput/queue", asyncio_like, [ASYNCIO], 1.5)
    ratio_line(results, "vs naive anyio streams", "throughput/naive", backends, backends, 10)
    ratio_line(results, "vs pypeln (range source)", "throughput/pypeln", [ASYNCIO], [ASYNCIO], 30)
    ratio_line(
        results, "vs pypeln (async source)", "throughput/pypeln_async", [ASYNCIO], [ASYNCIO], 30
    )

    table(
        results,
        f"2. Light-load latency, us per call() through {LATENCY_HOPS} trivial stages "
        f"({config.latency_calls} calls after {config.latency_warmup} warm-up)",
        [
            ("latency/median", "aseda median"),
            ("latency/p99", "aseda p99"),
            ("latency_ref/median", "asyncio.Queue + Future median (reference)"),
            ("latency_ref/p99", "asyncio.Queue + Future p99 (reference)"),
        ],
        backends,
        1,
    )
    for metric, label, limit in (("latency/median", "median", 50), ("latency/p99", "p99", 150)):
        values = {b.label: results.best(metric, b.label) for b in backends}
        shown = ", ".join(f"{k} {cell(v, 1)} us" for k, v in values.items())
        ok = all(v is not None and v < limit for v in values.values())
        verdict = results.check(f"latency {label}", shown, f"< {limit} us everywhere", ok)
        print(f"  {label:<7} target < {limit} us on every backend: {shown}  {verdict}")

    offload_backends = [b for b in (ASYNCIO, TRIO) if b.label in by_label]
    table(
        results,
        f"3a. Blocking stage, one call at a time, us per call ({config.offload_calls} calls "
        f"after {config.offload_warmup} warm-up)",
        [
            ("offload_call/aseda", "aseda call(), blocking stage"),
            ("offload_call/executor", "loop.run_in_executor (1 thread)"),
            ("offload_call/to_thread", "anyio.to_thread.run_sync"),
        ],
        offload_backends,
        1,
    )
    ours = results.best("offload_call/aseda", "asyncio")
    executor = results.best("offload_call/executor", "asyncio")
    if ours is not None and executor is not None:
        verdict = results.check(
            "blocking call vs run_in_executor (asyncio)",
            f"{ours:.1f} us vs {executor:.1f} us",
            "aseda <= run_in_executor",
            ours <= executor,
        )
        print(
            f"  asyncio: aseda {ours:.1f} us vs run_in_executor {executor:.1f} us "
            f"({executor / ours:.2f}x); target aseda <= run_in_executor  {verdict}"
        )
    for backend in offload_backends:
        value = ratio(results, "offload_call/to_thread", "offload_call/aseda", backend.label)
        if value is not None:
            print(f"  {backend.label}: aseda is {value:.2f}x cheaper than anyio.to_thread.run_sync")

    rows = [
        ("offload_batch/each", "aseda blocking, up to 64 per hop"),
        ("offload_batch/batch", f"aseda blocking, batch={OFFLOAD_BATCH}"),
    ]
    table(
        results,
        f"3b. Blocking stage, saturated, us per event ({config.events} events)",
        rows,
        offload_backends,
        2,
    )
    for metric, label in rows:
        values = {b.label: results.best(metric, b.label) for b in offload_backends}
        shown = ", ".join(f"{k} {cell(v, 2)} us" for k, v in values.items())
        ok = all(v is not None and v < 5 for v in values.values())
        verdict = results.check(label, shown, "< 5 us/event everywhere", ok)
        print(f"  {label:<34} target < 5 us/event: {shown}  {verdict}")

    table(
        results,
        "4. Memory (tracemalloc), bytes",
        [
            ("memory/queued_event", f"per queued event ({QUEUED_EVENTS} queued)"),
            ("memory/idle_stage", f"per idle stage ({IDLE_STAGES} vs 1)"),
            ("memory/idle_stage_definition", "  of which Stage + Graph objects"),
            ("memory/idle_stage_running", "  of which running state"),
        ],
        backends,
        1,
    )

    passed = sum(c.passed for c in results.checks)
    print(f"\nTargets: {passed} of {len(results.checks)} met")
    for c in results.checks:
        print(f"  {c.verdict}  {c.name:<42} {c.target:<26} {c.value}")


def environment() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for module in ("aseda", "anyio", "trio", "uvloop", "pypeln", "structlog"):
        try:
            versions[module] = version(module)
        except PackageNotFoundError:
            versions[module] = "not installed"
    return versions


def write_json(path: Path, config: Config, results: Results, seconds: float) -> None:
    best = {
        metric: {backend: min(values) for backend, values in per_backend.items()}
        for metric, per_backend in results.samples.items()
    }
    document = {
        "config": asdict(config),
        "environment": environment(),
        "wall_seconds": round(seconds, 1),
        "best": best,
        "samples": results.samples,
        "checks": [asdict(c) for c in results.checks],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path}")


def main(argv: list[str] | None = None) -> int:
    config, json_path = parse_args(argv)
    # aseda logs through structlog; keep its debug lines (stage started/stopped) out of the way.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    backends = [ASYNCIO]
    if installed("uvloop"):
        backends.append(UVLOOP)
    if installed("trio"):
        backends.append(TRIO)
    env = environment()
    print(
        f"aseda hop benchmark: events={config.events} hops={config.hops} "
        f"repeat={config.repeat}{' (quick)' if config.quick else ''}; "
        f"pypeln gets {config.pypeln_events} events",
        flush=True,
    )
    print("  " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    if len(backends) < 3:
        print("  (uvloop or trio is not installed: their columns are n/a)", flush=True)
    results = Results()
    started = clock()
    pipelines = throughput(config, backends, results)
    latency(config, backends, results)
    offload(config, [b for b in backends if b.label in ("asyncio", "trio")], results)
    memory(config, backends, results)
    seconds = clock() - started
    report(config, backends, pipelines, results)
    print(f"\nwall time {seconds:.0f} s", flush=True)
    if json_path is not None:
        write_json(json_path, config, results, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
