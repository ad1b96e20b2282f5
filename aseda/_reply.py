"""``call()`` envelopes: an event that carries its caller's pending answer through the graph."""

from __future__ import annotations

from typing import Any

import anyio

from ._errors import Abandoned, Dropped

__all__ = ["NO_REPLY", "NO_VALUE", "Call", "Reply"]

NO_VALUE: Any = object()


class Reply:
    """The pending answer of one ``call()``; ``pending`` counts its live envelopes.

    The first final value answers the call at once. An error answers it only when every
    envelope has ended without a value, so fan-out gives the same answer whatever the order.
    """

    __slots__ = ("done", "error", "event", "gone", "pending", "value")

    def __init__(self, event: anyio.Event) -> None:
        self.event = event
        self.pending = 1
        self.done = False
        # The caller stopped waiting (cancelled, timed out): nobody wants the answer.
        self.gone = False
        self.value: Any = NO_VALUE
        self.error: BaseException | None = None

    def resolve(self, value: Any) -> None:
        """A final value: answers the call unless one already did."""
        if not self.done:
            self.done, self.value = True, value
            self.event.set()

    def fail(self, error: BaseException) -> None:
        """One envelope failed (or was shed): remember the first error, then retire it."""
        if self.error is None:
            self.error = error
        self.pending -= 1
        self._settle(None)

    def retire(self, stage: str) -> None:
        """One envelope ended without a final value (dropped, or sent on)."""
        self.pending -= 1
        self._settle(stage)

    def _settle(self, stage: str | None) -> None:
        if self.pending == 0 and not self.done:
            self.done = True
            if self.error is None:
                self.error = Dropped(stage or "?")
            self.event.set()

    def abandon(self) -> None:
        """The graph stopped first."""
        if not self.done:
            self.done = True
            self.error = Abandoned("the graph stopped before this call's event was finished")
            self.event.set()


class _NoReply(Reply):
    """The reply of a sampled ``send()``: nobody waits, so every answer is dropped."""

    __slots__ = ()

    def __init__(self) -> None:
        self.pending = 0
        self.done = True
        self.gone = False
        self.value = NO_VALUE
        self.error = None

    def resolve(self, value: Any) -> None:
        pass

    def fail(self, error: BaseException) -> None:
        pass

    def retire(self, stage: str) -> None:
        pass

    def abandon(self) -> None:
        pass


NO_REPLY: Reply = _NoReply()


class Call:
    """An envelope: an event that carries timing (and, for ``call()``, a reply).

    Every ``call()`` travels in one; so does every sampled ``send()`` (with ``NO_REPLY``), which
    is how latency is measured without touching the events that are not sampled.
    """

    __slots__ = ("reply", "spans", "t_enter", "t_queued", "trace", "value")

    def __init__(
        self, value: Any, reply: Reply, t_enter: float = 0.0, trace: int | None = None
    ) -> None:
        self.value = value
        self.reply = reply
        self.t_enter = t_enter  # perf_counter() when it entered the graph
        self.t_queued = t_enter  # perf_counter() when it entered its current queue
        self.trace = trace  # trace id, for a traced event
        # A traced event's visits so far: (stage, enqueued, started, ended, outcome).
        self.spans: list[tuple[str, float, float, float, str]] | None = (
            [] if trace is not None else None
        )
