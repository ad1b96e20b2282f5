"""structlog logger and a rate limiter, so a failing stage cannot flood the log."""

from __future__ import annotations

import time

import structlog

__all__ = ["RateLimit", "logger"]

logger = structlog.get_logger("aseda")


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
