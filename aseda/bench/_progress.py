"""A rich progress bar for a run, shown on a terminal when the run is long enough."""

from __future__ import annotations

import importlib.util
import math
import sys
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

import anyio

from ._targets import Outcome

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["PROGRESS_SECONDS", "Live", "ProgressBar", "progress_enabled"]

#: Runs planned to last at least this many seconds show a progress bar by default.
PROGRESS_SECONDS = 3.0
#: Seconds between two refreshes of the bar.
REFRESH = 0.25


def progress_enabled(option: bool | None, planned: float, stream: TextIO | None = None) -> bool:
    """Whether a run shows its progress bar.

    Args:
        option: the run's ``progress`` argument: True or False decide (True still needs rich);
            None shows it when ``stream`` (stdout) is a terminal and the run is planned to
            last at least :data:`PROGRESS_SECONDS` (``planned`` may be ``inf``: unknown).
        planned: the run's planned length in seconds.
        stream: the stream the bar is drawn on (by default ``sys.stdout``).
    """
    if option is False:
        return False
    if importlib.util.find_spec("rich") is None:
        return False
    if option is True:
        return True
    stream = sys.stdout if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        tty = False
    return tty and planned >= PROGRESS_SECONDS


class Live:
    """Running counts of a run's requests, for the progress bar."""

    __slots__ = ("errors", "ok", "refused", "started")

    def __init__(self) -> None:
        self.started = self.ok = self.refused = self.errors = 0

    def count(self, outcome: Outcome) -> None:
        if outcome is Outcome.OK:
            self.ok += 1
        elif outcome is Outcome.REFUSED:
            self.refused += 1
        else:
            self.errors += 1


class ProgressBar:
    """A transient rich bar over the planned seconds (or requests) of a run.

    Use as a context manager around the run and start :meth:`run` in the run's task group;
    it redraws every :data:`REFRESH` seconds until cancelled. Disabled, it does nothing.
    """

    def __init__(
        self,
        name: str,
        live: Live,
        *,
        seconds: float,
        requests: int | None = None,
        enabled: bool,
    ) -> None:
        self.name = name
        self.live = live
        self.seconds = seconds
        self.requests = requests
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._start = 0.0

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[status]}"),
                transient=True,
                auto_refresh=False,
            )
            by_time = math.isfinite(self.seconds)
            total = self.seconds if by_time else float(self.requests or 0) or None
            self._task = self._progress.add_task(self.name, total=total, status="")
            self._progress.start()
            self._start = anyio.current_time()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def update(self) -> None:
        """Redraw the bar with the counts so far."""
        if self._progress is None or self._task is None:
            return
        live = self.live
        done = live.ok + live.refused + live.errors
        if math.isfinite(self.seconds):
            completed = min(self.seconds, anyio.current_time() - self._start)
        else:
            completed = float(done)
        status = f"sent {live.started}  ok {live.ok}  refused {live.refused}  errors {live.errors}"
        self._progress.update(self._task, completed=completed, status=status, refresh=True)

    async def run(self) -> None:
        """Redraw the bar until cancelled (a no-op when disabled)."""
        if self._progress is None:
            return
        while True:
            self.update()
            await anyio.sleep(REFRESH)
