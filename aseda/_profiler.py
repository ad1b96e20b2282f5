"""Sandstorm's profiler: every stage's figures on a period, one JSON line per sample.

``aseda plot run.jsonl`` turns the file into PNG panels over time (see ``_plot.py``).

One line looks like this (stages abridged)::

    {"t": 2.0, "state": "running",
     "stages": {"lookup": {"queue_length": 812, "capacity": 1000, "workers": 4, ...,
                           "rate_in": 1990.0, "rate_out": 801.0, ...}},
     "bottleneck": {"stage": "lookup", "reason": "4/4 workers busy, ...", "score": 1.1},
     "decisions": [{"t": 1.5, "stage": "lookup", "action": "add worker", "reason": "..."}]}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from ._bottleneck import find_bottleneck, refused
from ._control import Action
from ._log import logger

if TYPE_CHECKING:
    from ._histogram import LatencySummary
    from ._runtime import RunningGraph
    from ._stats import GraphStats, StageStats

__all__ = ["Profiler", "read_profile"]

#: the counters every sample carries, per stage, as the statistics have them
COUNTERS = (
    "admitted",
    "processed",
    "failed",
    "rejected",
    "shed",
    "dropped",
    "degraded",
    "redirected",
)


class Profiler:
    """Records a running graph's statistics to a JSON-lines file, one line per sample.

    Use it inside the graph's block::

        async with graph.run() as running:
            async with aseda.Profiler(running, "run.jsonl", interval=1.0) as profiler:
                ...  # feed the graph

    On entry it truncates the file and takes a baseline; then, in a task of its own, every
    ``interval`` seconds it appends a sample, and on exit a last one. A sample holds the
    seconds since entry (``t``), the graph's state and, for every stage: queue length,
    capacity, workers, batch, in flight, senders waiting, the counters (admitted, processed,
    failed, rejected, shed, dropped, degraded, redirected), the runtime's ``throughput``, the
    rates since the previous sample (``rate_in``: admitted/s, ``rate_out``: processed/s,
    ``refused_rate``: rejected + shed + degraded + redirected per second) and the 50th, 90th
    and 99th percentiles of queue wait, service and response time over the whole run, and of
    the response time over the last one to two seconds (``recent_response_*``; ``null`` until
    sampled).
    It also names the bottleneck (:func:`aseda.find_bottleneck`, or ``null``) and lists the
    decisions recorded since the previous sample (:meth:`record_decision`). Each line is
    flushed as it is written, so a file being written can be read (and plotted) at any time.

    A failure to write (a full disk) is logged and stops the sampling; the graph goes on.

    Args:
        running: the running graph to sample.
        path: the JSON-lines file to write.
        interval: seconds between samples; ``None`` or 0 takes none on its own: call
            :meth:`sample` when you want one.
        clock: returns the current time in seconds (``anyio.current_time`` by default, the
            clock sleeping follows); give your own to make times exact in tests.

    Raises:
        ValueError: ``interval`` is negative or not finite.
    """

    def __init__(
        self,
        running: RunningGraph,
        path: str | os.PathLike[str],
        *,
        interval: float | None = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if interval is not None and not (0 <= interval < math.inf):
            raise ValueError(f"interval must be a non-negative number of seconds, not {interval!r}")
        self.running = running
        self.path = Path(path)
        self.interval = interval or None
        self._clock = clock if clock is not None else anyio.current_time
        #: samples written so far
        self.samples = 0
        self._file: IO[str] | None = None
        self._tg: TaskGroup | None = None
        self._start = 0.0
        self._last_t = 0.0
        self._previous: GraphStats | None = None
        self._decisions: list[dict[str, Any]] = []

    # The context manager ----------------------------------------------------------------------

    async def __aenter__(self) -> Profiler:
        if self._tg is not None or self._file is not None:
            raise RuntimeError("this profiler is already running")
        self._file = self.path.open("w", encoding="utf-8")
        try:
            self._start = self._clock()
            self._last_t = 0.0
            self._previous = self.running.stats()
            self.samples = 0
            tg = anyio.create_task_group()
            await tg.__aenter__()
        except BaseException:
            self._close()
            raise
        self._tg = tg
        self.running.add_decision_listener(self._on_decision)
        if self.interval is not None:
            tg.start_soon(self._loop, self.interval, name=f"aseda profiler {self.path}")
        return self

    def _on_decision(self, stage: str, controller: str, action: Action) -> None:
        """Controller decisions reach the profile without the caller's help."""
        self.record_decision(
            stage, action.kind, action.reason, controller=controller, value=action.value
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        tg, self._tg = self._tg, None
        assert tg is not None
        self.running.remove_decision_listener(self._on_decision)
        try:
            tg.cancel_scope.cancel()
            if isinstance(exc, Exception):
                # The block's own error leaves as itself, not wrapped in an exception group:
                # the task group only stops the sampler (whose errors it logs, never raises).
                await tg.__aexit__(None, None, None)
                return None
            return await tg.__aexit__(exc_type, exc, tb)
        finally:
            try:
                if self._file is not None:
                    self.sample()  # the last sample
            except Exception as error:
                logger.error("profiler failed", path=str(self.path), error=repr(error))
            finally:
                self._close()

    async def _loop(self, interval: float) -> None:
        at = anyio.current_time()
        while True:
            at += interval
            now = anyio.current_time()
            if at < now:  # fell behind (a blocked loop): skip the ticks missed
                at += (now - at) // interval * interval + interval
            await anyio.sleep_until(at)
            try:
                self.sample()
            except Exception as exc:
                logger.error(
                    "profiler failed; sampling stopped", path=str(self.path), error=repr(exc)
                )
                self._close()
                return

    def _close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.close()

    # Sampling -----------------------------------------------------------------------------------

    def record_decision(self, stage: str, action: str, reason: str, **details: Any) -> None:
        """Note a controller's decision; it is written with the next sample.

        Args:
            stage: the stage it concerns.
            action: what was done, e.g. ``"add worker"``.
            reason: why, e.g. ``"queue 812 > 500"``.
            **details: more JSON-ready figures (``workers=5``), kept under ``"details"``.
        """
        decision: dict[str, Any] = {
            "t": round(self._clock() - self._start, 6),
            "stage": stage,
            "action": action,
            "reason": reason,
        }
        if details:
            decision["details"] = details
        self._decisions.append(decision)

    def sample(self) -> dict[str, Any]:
        """Take a sample now, append it to the file and return it.

        Raises:
            RuntimeError: the profiler is not running (outside its ``async with`` block).
        """
        if self._file is None:
            raise RuntimeError("the profiler is not running: use it in an async with block")
        now = self._clock()
        t = now - self._start
        dt = t - self._last_t
        current = self.running.stats()
        previous = self._previous
        bottleneck = find_bottleneck(current, previous, graph=self.running.graph)
        record: dict[str, Any] = {
            "t": round(t, 6),
            "state": current.state,
            "stages": {
                s.name: _stage_record(s, _find(previous, s.name), dt) for s in current.stages
            },
            "bottleneck": None
            if bottleneck is None
            else {
                "stage": bottleneck.stage,
                "reason": bottleneck.reason,
                "score": bottleneck.score,
            },
            "decisions": self._decisions,
        }
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        self._decisions = []
        self._previous = current
        self._last_t = t
        self.samples += 1
        return record


def _find(stats: GraphStats | None, name: str) -> StageStats | None:
    if stats is None:
        return None
    for s in stats:
        if s.name == name:
            return s
    return None


def _number(value: float) -> float | str | None:
    """A float as JSON can hold it: nan becomes null, infinity ``"inf"``."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf"
    return value


def _rate(now: int, before: int | None, dt: float) -> float | None:
    if before is None or dt <= 0:
        return None
    return round((now - before) / dt, 6)


def _percentiles(name: str, summary: LatencySummary, out: dict[str, Any]) -> None:
    for q in ("p50", "p90", "p99"):
        out[f"{name}_{q}"] = _number(getattr(summary, q))
    out[f"{name}_count"] = summary.count


def _stage_record(s: StageStats, before: StageStats | None, dt: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "queue_length": s.queue_length,
        "capacity": _number(s.capacity),
        "workers": s.workers,
        "workers_max": s.workers_max,
        "batch": s.batch,
        "in_flight": s.in_flight,
        "senders_waiting": s.senders_waiting,
    }
    for counter in COUNTERS:
        record[counter] = getattr(s, counter)
    record["throughput"] = _number(s.throughput)
    record["rate_in"] = _rate(s.admitted, before.admitted if before else None, dt)
    record["rate_out"] = _rate(s.processed, before.processed if before else None, dt)
    record["refused_rate"] = _rate(refused(s), refused(before) if before else None, dt)
    _percentiles("queue_wait", s.queue_wait, record)
    _percentiles("service", s.service, record)
    _percentiles("response", s.response, record)
    # The plot's "response over time" wants recent samples, not the whole run's.
    _percentiles("recent_response", s.recent_response, record)
    return record


def read_profile(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a profiler's JSON-lines file: one dict per sample, in order.

    A last line cut short (the writer was killed mid-line) is left out.

    Raises:
        OSError: the file cannot be read.
        ValueError: a line other than the last is not a JSON object.
    """
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    samples: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except ValueError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not a JSON line") from None
        if not isinstance(sample, dict):
            raise ValueError(f"{path}:{number}: not a JSON object")
        samples.append(sample)
    return samples
