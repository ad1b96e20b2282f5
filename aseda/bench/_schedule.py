"""Arrival schedules of an open-loop load: pure functions, no clock and no event loop.

A load is an offered rate (requests per second) as a function of time since the start of a
run, given in one of three ways:

* a number: a constant rate;
* a sequence of :class:`Phase` (or ``(start, duration, rate)`` tuples): a piecewise-constant
  rate; where phases overlap the one listed last wins, and time no phase covers has rate 0, so
  a base load with a spike is ``[Phase(0, 60, 100), Phase(20, 5, 1000, "spike")]``;
* a function ``rate(t) -> float``: sampled at the midpoint of every ``resolution`` step.

:func:`arrival_times` turns a load into the intended send times of the requests, by inverting
the cumulative offered load ``L(t)`` (the integral of the rate from 0 to ``t``): request ``k``
is sent when ``L`` reaches ``k`` (fixed spacing) or the sum of ``k + 1`` unit exponential draws
(a Poisson process, by the time-rescaling theorem). A constant rate ``r`` over ``d`` seconds thus
gives exactly ``ceil(r * d)`` fixed arrivals, at ``0, 1/r, 2/r, ...``.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "Load",
    "Phase",
    "arrival_times",
    "load_duration",
    "offered_rate",
    "phase_spans",
    "rate_segments",
]


@dataclass(frozen=True)
class Phase:
    """A stretch of time with one offered rate.

    Attributes:
        start: seconds from the start of the run.
        duration: seconds.
        rate: requests per second offered during the phase.
        name: the phase's label in a report's per-phase rows (``""``: ``"phase <index>"``).
    """

    start: float
    duration: float
    rate: float
    name: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and self.start >= 0):
            raise ValueError(f"a phase's start must be finite and >= 0, not {self.start!r}")
        if not (math.isfinite(self.duration) and self.duration > 0):
            raise ValueError(f"a phase's duration must be finite and > 0, not {self.duration!r}")
        _check_rate(self.rate)

    @property
    def end(self) -> float:
        """When the phase ends, in seconds from the start of the run."""
        return self.start + self.duration


#: A constant rate, phases, or a rate function of time (see the module documentation).
Load: TypeAlias = float | Sequence[Phase | tuple[float, float, float]] | Callable[[float], float]

#: A piecewise-constant rate: (start, end, rate) with increasing, non-overlapping spans.
Segment: TypeAlias = tuple[float, float, float]


def _check_rate(rate: float) -> None:
    if not (math.isfinite(rate) and rate >= 0):
        raise ValueError(f"a rate must be finite and >= 0, not {rate!r}")


def phases_of(load: Load) -> list[Phase] | None:
    """The load's phases as :class:`Phase` objects, or None for a rate or a rate function."""
    if isinstance(load, (int, float)) or callable(load):
        return None
    return [p if isinstance(p, Phase) else Phase(*p) for p in load]


def load_duration(load: Load) -> float | None:
    """The end of the load's last phase, or None for a rate or a rate function."""
    phases = phases_of(load)
    if phases is None:
        return None
    return max((p.end for p in phases), default=0.0)


def rate_segments(load: Load, duration: float, *, resolution: float = 0.01) -> list[Segment]:
    """The load as piecewise-constant ``(start, end, rate)`` segments covering ``[0, duration)``.

    Args:
        load: a rate, phases or a rate function (see :data:`Load`).
        duration: seconds covered.
        resolution: the step at which a rate function is sampled (at each step's midpoint).

    Raises:
        ValueError: a negative, infinite or NaN rate or duration, or a bad resolution.
    """
    if not (math.isfinite(duration) and duration >= 0):
        raise ValueError(f"duration must be finite and >= 0, not {duration!r}")
    if duration == 0:
        return []
    if isinstance(load, (int, float)):
        _check_rate(load)
        return [(0.0, float(duration), float(load))]
    if callable(load):
        if not (math.isfinite(resolution) and resolution > 0):
            raise ValueError(f"resolution must be finite and > 0, not {resolution!r}")
        steps = max(1, math.ceil(duration / resolution - 1e-9))
        out: list[Segment] = []
        for k in range(steps):
            lo, hi = k * resolution, min(duration, (k + 1) * resolution)
            rate = float(load((lo + hi) / 2))
            _check_rate(rate)
            out.append((lo, hi, rate))
        return out
    phases = phases_of(load)
    assert phases is not None
    cuts = {0.0, float(duration)}
    for p in phases:
        cuts.update(float(t) for t in (p.start, p.end) if t < duration)
    edges = sorted(cuts)
    segments: list[Segment] = []
    for lo, hi in itertools.pairwise(edges):
        mid = (lo + hi) / 2
        rate = 0.0
        for p in phases:  # the last phase covering the span wins
            if p.start <= mid < p.end:
                rate = p.rate
        segments.append((lo, hi, rate))
    return segments


def phase_spans(phases: Sequence[Phase], duration: float) -> list[tuple[str, float, float]]:
    """The spans ``(name, start, end)`` in which each phase is in force, in time order.

    A phase overridden in its middle by a later one (a spike over a base load) is in force
    before and after it: two spans, the second named ``"<name> #2"``. Time that no phase
    covers has no span. A phase without a name is called ``"phase <index>"``.
    """
    names = [p.name or f"phase {k}" for k, p in enumerate(phases)]
    cuts = {0.0, float(duration)}
    for p in phases:
        cuts.update(float(t) for t in (p.start, p.end) if t < duration)
    spans: list[tuple[int, float, float]] = []
    for lo, hi in itertools.pairwise(sorted(cuts)):
        mid = (lo + hi) / 2
        winner = -1
        for k, p in enumerate(phases):
            if p.start <= mid < p.end:
                winner = k
        if winner < 0:
            continue
        if spans and spans[-1][0] == winner and spans[-1][2] == lo:
            spans[-1] = (winner, spans[-1][1], hi)
        else:
            spans.append((winner, lo, hi))
    seen: dict[int, int] = {}
    out = []
    for k, lo, hi in spans:
        seen[k] = seen.get(k, 0) + 1
        out.append((names[k] + (f" #{seen[k]}" if seen[k] > 1 else ""), lo, hi))
    return out


def offered_rate(load: Load, t: float) -> float:
    """The load's rate at time ``t`` (seconds from the start), in requests per second."""
    if isinstance(load, (int, float)):
        return float(load) if t >= 0 else 0.0
    if callable(load):
        return float(load(t))
    rate = 0.0
    for p in phases_of(load) or ():
        if p.start <= t < p.end:
            rate = p.rate
    return rate


def arrival_times(
    load: Load,
    duration: float | None = None,
    *,
    poisson: bool = True,
    seed: int | None = 0,
    resolution: float = 0.01,
) -> list[float]:
    """The intended send times of an open-loop load, in seconds from the start, ascending.

    Args:
        load: a rate, phases or a rate function (see :data:`Load`).
        duration: arrivals are generated in ``[0, duration)``; by default the end of the last
            phase (required for a rate or a rate function).
        poisson: exponential gaps (a Poisson process, a realistic crowd of independent users);
            False for fixed spacing (exactly ``rate`` arrivals per second).
        seed: the seed of the Poisson draws (None: a fresh random seed); the same seed gives
            the same times.
        resolution: the step at which a rate function is sampled.

    Returns:
        The arrival times; every one is in ``[0, duration)``.

    Raises:
        ValueError: no duration for a rate or a rate function, or a bad rate or duration.
    """
    if duration is None:
        duration = load_duration(load)
        if duration is None:
            raise ValueError("arrival_times() needs a duration for a rate or a rate function")
    segments = rate_segments(load, duration, resolution=resolution)
    rng = random.Random(seed)
    times: list[float] = []
    target = rng.expovariate(1.0) if poisson else 0.0  # the cumulative load of the next one
    cumulative = 0.0  # the cumulative load at the start of the segment
    for lo, hi, rate in segments:
        if rate <= 0:
            continue
        top = cumulative + rate * (hi - lo)
        # The cumulative load is a sum of floats: forgive it its last bits of rounding.
        while target < top - 1e-9 * max(1.0, top):
            t = max(lo, lo + (target - cumulative) / rate)
            if t >= hi:  # rounding at the segment's end: it belongs to the next one
                break
            times.append(t)
            target += rng.expovariate(1.0) if poisson else 1.0
        cumulative = top
    return times
