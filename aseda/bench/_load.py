"""The load generators: open loop (arrivals on a schedule) and closed loop (N clients).

Open loop: requests arrive on a schedule fixed in advance (:func:`arrival_times`), whatever
the service does, as users of a public service do. Every request runs in its own task, so a
slow or stalled service never delays a later arrival, and its latency is measured from its
*intended* send time: if the generator itself falls behind (an overloaded event loop, a
garbage collection pause), the delay counts against the service, never in its favour. The
generator's own lateness (start - intended) is recorded separately, as the lag. This avoids
*coordinated omission*, where a generator that waits for answers sends fewer requests exactly
while the service is slow, and so hides the slowness from the measurement.

Closed loop: ``clients`` clients each send a request, wait for its answer, think, and send
the next: the offered load falls as the service slows (the Haboob benchmark's clients). A
closed-loop latency is measured from when the client sent the request.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import anyio

from .._errors import Rejected
from ._progress import Live, ProgressBar, progress_enabled
from ._report import Report, Sample, Samples
from ._schedule import Load, arrival_times, load_duration, phase_spans, phases_of
from ._targets import Outcome, Target, TargetResult

__all__ = ["closed_loop", "open_loop"]

#: The clock of every measurement.
clock = time.perf_counter


def _normalize(result: TargetResult) -> tuple[Outcome, str]:
    value: object = result  # checked at run time too: targets are often untyped
    if value is None:
        return Outcome.OK, ""
    if isinstance(value, Outcome):
        return value, ""
    if isinstance(value, tuple) and len(value) == 2:
        outcome, detail = value
        if isinstance(outcome, Outcome) and isinstance(detail, str):
            return outcome, detail
    return Outcome.ERROR, f"bad target result {value!r}"


async def _issue(target: Target, sample: Sample, origin: float, live: Live) -> None:
    """Send one request and record when and how it ended (a cancellation records nothing)."""
    sample.started = clock() - origin
    live.started += 1
    try:
        result = await target(sample.client, sample.seq)
    except Rejected as exc:
        outcome, detail = Outcome.REFUSED, exc.reason
    except Exception as exc:
        outcome, detail = Outcome.ERROR, type(exc).__name__
    else:
        outcome, detail = _normalize(result)
    sample.finished = clock() - origin
    sample.outcome = outcome
    sample.detail = detail
    live.count(outcome)


def _check(name: str, value: float, *, positive: bool = False) -> None:
    ok = value > 0 if positive else value >= 0
    if math.isnan(value) or not ok:
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, not {value!r}")


def _describe(load: Load) -> Any:
    phases = phases_of(load)
    if phases is not None:
        return [
            {"name": p.name, "start": p.start, "duration": p.duration, "rate": p.rate}
            for p in phases
        ]
    if isinstance(load, (int, float)):
        return float(load)
    return getattr(load, "__name__", "function")


async def open_loop(
    target: Target,
    load: Load,
    duration: float | None = None,
    *,
    poisson: bool = True,
    seed: int | None = 0,
    clients: int = 1,
    warmup: float = 0.0,
    grace: float = 1.0,
    interval: float = 1.0,
    name: str = "open loop",
    progress: bool | None = None,
    on_end: Callable[[], object] | None = None,
) -> Report:
    """Offer ``load`` to ``target`` open loop for ``duration`` seconds and report.

    Every request is scheduled in advance (see :func:`arrival_times`) and started on time in
    its own task; its latency runs from its intended send time. Arrivals stop at
    ``duration``; requests still pending then get ``grace`` seconds to finish and are then
    cancelled (counted as unfinished). With phases, the report has a row for each span in
    which a phase is in force (see :func:`phase_spans`): before, during and after a spike.

    Args:
        target: ``async def request(client_id, seq)``, e.g. :func:`graph_target` or
            :class:`HttpTarget`.
        load: a rate (requests/s), a list of :class:`Phase` (spikes), or a rate function.
        duration: seconds of arrivals; by default the end of the last phase.
        poisson: Poisson arrivals (exponential gaps); False for fixed spacing.
        seed: seed of the Poisson draws (the same seed gives the same schedule).
        clients: request ``seq`` goes out as client ``seq % clients``.
        warmup: seconds at the start left out of the report's main window.
        grace: seconds pending requests may take after arrivals stop (``math.inf``: all).
        interval: seconds per row of the report's timeline.
        name: the report's label (and the progress bar's).
        progress: show a progress bar (None: on a terminal, for runs of 3 s or more).
        on_end: called when arrivals stop, before the grace period (e.g. to read a graph's
            statistics at that moment).

    Returns:
        The report; its ``samples`` hold every request.

    Raises:
        ValueError: a bad load, duration or option.
    """
    if duration is None:
        duration = load_duration(load)
        if duration is None:
            raise ValueError("open_loop() needs a duration for a rate or a rate function")
    _check("duration", duration)
    _check("warmup", warmup)
    _check("grace", grace)
    if clients < 1:
        raise ValueError(f"clients must be >= 1, not {clients!r}")
    if warmup and warmup >= duration:
        raise ValueError(f"warmup ({warmup:g} s) must be shorter than the run ({duration:g} s)")
    times = arrival_times(load, duration, poisson=poisson, seed=seed)
    items = [Sample(i % clients, i, t) for i, t in enumerate(times)]
    live = Live()
    pending = 0
    arrivals_over = False
    all_done = anyio.Event()
    bar = ProgressBar(name, live, seconds=duration, enabled=progress_enabled(progress, duration))

    async def request(sample: Sample) -> None:
        nonlocal pending
        await _issue(target, sample, origin, live)
        pending -= 1
        if arrivals_over and pending == 0:
            all_done.set()

    with bar:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bar.run)
            origin = clock()
            start_soon = tg.start_soon
            for sample in items:
                # Event loops may wake a timer up to a millisecond early: never start early.
                while (delay := origin + sample.intended - clock()) > 0:  # noqa: ASYNC110
                    await anyio.sleep(delay)
                pending += 1
                start_soon(request, sample)
            delay = origin + duration - clock()
            if delay > 0:
                await anyio.sleep(delay)
            arrivals_over = True
            if on_end is not None:
                on_end()
            if pending:
                with anyio.move_on_after(grace):
                    await all_done.wait()
            tg.cancel_scope.cancel()
    phases = phases_of(load) or []
    samples = Samples("open", clients, duration, items, origin)
    params = {
        "load": _describe(load),
        "duration": duration,
        "poisson": poisson,
        "seed": seed,
        "clients": clients,
        "warmup": warmup,
        "grace": grace,
    }
    return samples.report(
        name=name,
        warmup=warmup,
        interval=interval,
        phases=phase_spans(phases, duration),
        params=params,
    )


async def closed_loop(
    target: Target,
    clients: int,
    duration: float | None = None,
    *,
    requests_per_client: int | None = None,
    think_time: float = 0.0,
    think: Literal["fixed", "exponential"] = "fixed",
    ramp: float = 0.0,
    seed: int | None = 0,
    warmup: float = 0.0,
    grace: float = 1.0,
    interval: float = 1.0,
    phases: Sequence[tuple[str, float, float]] = (),
    name: str = "closed loop",
    progress: bool | None = None,
    on_end: Callable[[], object] | None = None,
) -> Report:
    """Run ``clients`` closed-loop clients against ``target`` and report.

    Each client sends a request, waits for its outcome, thinks ``think_time`` seconds, and
    sends the next, until ``duration`` seconds have passed or it has sent
    ``requests_per_client`` requests. The requests in flight at ``duration`` get ``grace``
    seconds to finish and are then cancelled (counted as unfinished). Connections are the
    target's business: :class:`HttpTarget` reconnects every ``requests_per_connection``.

    Args:
        target: ``async def request(client_id, seq)``; ``seq`` counts each client's requests.
        clients: how many clients.
        duration: seconds the clients send for (None: until each sent its requests).
        requests_per_client: the most requests each client sends (None: no limit).
        think_time: seconds a client waits between an answer and its next request (the
            Haboob clients think 20 ms).
        think: ``"fixed"`` think times, or ``"exponential"`` ones with that mean.
        ramp: seconds over which the clients start, evenly spaced (0: all at once).
        seed: seed of the exponential think times.
        warmup: seconds at the start left out of the report's main window.
        grace: seconds requests in flight may take after ``duration`` (``math.inf``: all).
        interval: seconds per row of the report's timeline.
        phases: named windows ``(name, start, end)`` to report on too.
        name: the report's label (and the progress bar's).
        progress: show a progress bar (None: on a terminal, for runs of 3 s or more).
        on_end: called at ``duration`` (or once every client is done), before the grace.

    Returns:
        The report; its ``samples`` hold every request.

    Raises:
        ValueError: neither ``duration`` nor ``requests_per_client``, or a bad option.
    """
    if clients < 1:
        raise ValueError(f"clients must be >= 1, not {clients!r}")
    if duration is None and requests_per_client is None:
        raise ValueError("closed_loop() needs a duration, requests_per_client, or both")
    if duration is not None:
        _check("duration", duration, positive=True)
    if requests_per_client is not None and requests_per_client < 0:
        raise ValueError(f"requests_per_client must be >= 0, not {requests_per_client!r}")
    for label, value in (("think_time", think_time), ("ramp", ramp), ("warmup", warmup)):
        _check(label, value)
    _check("grace", grace)
    if think not in ("fixed", "exponential"):
        raise ValueError(f"think must be 'fixed' or 'exponential', not {think!r}")
    if warmup and duration is not None and warmup >= duration:
        raise ValueError(f"warmup ({warmup:g} s) must be shorter than the run ({duration:g} s)")
    rng = random.Random(seed)
    items: list[Sample] = []
    live = Live()
    active = clients
    all_done = anyio.Event()
    planned = duration if duration is not None else math.inf
    total = clients * requests_per_client if requests_per_client is not None else None
    bar = ProgressBar(
        name,
        live,
        seconds=planned,
        requests=total,
        enabled=progress_enabled(progress, planned),
    )

    async def client(c: int) -> None:
        nonlocal active
        try:
            if ramp:
                await anyio.sleep(max(0.0, origin + ramp * c / clients - clock()))
            seq = 0
            while requests_per_client is None or seq < requests_per_client:
                now = clock() - origin
                if duration is not None and now >= duration:
                    break
                sample = Sample(c, seq, now)
                items.append(sample)
                await _issue(target, sample, origin, live)
                seq += 1
                more = requests_per_client is None or seq < requests_per_client
                if think_time > 0 and more:
                    pause = think_time if think == "fixed" else rng.expovariate(1 / think_time)
                    await anyio.sleep(pause)
        finally:
            active -= 1
            if active == 0:
                all_done.set()

    with bar:
        async with anyio.create_task_group() as tg:
            tg.start_soon(bar.run)
            origin = clock()
            for c in range(clients):
                tg.start_soon(client, c)
            if duration is not None:
                with anyio.move_on_after(max(0.0, origin + duration - clock())):
                    await all_done.wait()
                if on_end is not None:
                    on_end()
                with anyio.move_on_after(grace):
                    await all_done.wait()
            else:
                await all_done.wait()
                if on_end is not None:
                    on_end()
            tg.cancel_scope.cancel()
    items.sort(key=lambda s: s.intended)
    if duration is not None:
        end = duration
    else:
        end = max((s.finished for s in items if s.outcome is not None), default=0.0)
        end = math.nextafter(end, math.inf)  # the last answer falls inside the window
        if warmup and warmup >= end:
            raise ValueError(f"warmup ({warmup:g} s) outlasted the run ({end:g} s)")
    samples = Samples("closed", clients, end, items, origin)
    params = {
        "clients": clients,
        "duration": duration,
        "requests_per_client": requests_per_client,
        "think_time": think_time,
        "think": think,
        "ramp": ramp,
        "seed": seed,
        "warmup": warmup,
        "grace": grace,
    }
    return samples.report(name=name, warmup=warmup, interval=interval, phases=phases, params=params)
