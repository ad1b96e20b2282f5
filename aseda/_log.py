"""structlog logger and a rate limiter, so a failing stage cannot flood the log."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog

__all__ = ["RateLimit", "logger"]


class _Logger:
    """aseda's logger: the application's structlog configuration, once it has one.

    Until the application configures structlog, aseda logs INFO and above to stderr, so a
    library does not print its debug lines (stage started/stopped) into a program's output.
    Only slow paths log, so the check per call costs nothing that matters.
    """

    __slots__ = ("_configured", "_fallback")

    def __init__(self) -> None:
        self._fallback: Any = None
        # A lazy proxy reads the configuration on every call, so one can be kept.
        self._configured: Any = structlog.get_logger("aseda")

    def _target(self) -> Any:
        if structlog.is_configured():
            return self._configured
        if self._fallback is None:
            self._fallback = structlog.wrap_logger(
                structlog.PrintLogger(sys.stderr),
                wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
                    structlog.dev.ConsoleRenderer(colors=False),
                ],
            )
        return self._fallback

    def __getattr__(self, level: str) -> Any:
        return getattr(self._target(), level)


logger: Any = _Logger()


class RateLimit:
    """Allow one log line per ``interval`` seconds; count the ones held back.

    Checked only on the slow paths (a failure, a refusal), never per successful event.
    """

    __slots__ = ("interval", "last", "suppressed")

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.last = -float("inf")
        self.suppressed = 0

    def allow(self) -> int | None:
        """Return how many lines were held back since the last one, or None to hold this one."""
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return None
        held, self.suppressed, self.last = self.suppressed, 0, now
        return held
