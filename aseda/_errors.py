"""The aseda error family: every error aseda raises derives from :class:`AsedaError`.

A handler's own exception is never wrapped: it reaches a ``call()`` caller, a dead-letter
stage, or the task group as itself. Only errors about aseda's own rules live here.
"""

from __future__ import annotations

__all__ = [
    "Abandoned",
    "AsedaError",
    "ConfigError",
    "Dropped",
    "GraphClosed",
    "GraphError",
    "Rejected",
    "RoutingError",
]


class AsedaError(Exception):
    """Root of every error aseda raises itself.

    Catch this to handle any refusal or misuse reported by aseda. It is not raised for an
    exception of a stage handler: that exception propagates as itself.
    """


class ConfigError(AsedaError, ValueError):
    """A stage option is invalid: raised by :func:`aseda.stage` when the stage is declared.

    Examples: ``capacity=0``, ``workers=(4, 2)``, ``batch=-1``, a handler that is not callable.
    While a graph runs it is raised only for a bad argument of a call made then: a ``to=``
    naming no stage, or ``set_workers()`` outside the stage's bounds. It is never raised for an
    event: options that passed are not re-checked per event.
    """


class GraphError(ConfigError):
    """A graph or handler is malformed: raised when a :class:`aseda.Graph` is built.

    Also raised by :func:`aseda.stage` for a handler of the wrong kind (an ``async def``
    declared ``blocking=True``, a plain ``def`` declared ``blocking=False``, a generator).
    Examples at build time: two stages with one name, a route or dead-letter stage that is not in
    the graph, a stage no event can reach. It is not raised while a graph runs: a handler
    routing to an undeclared stage gets :class:`RoutingError` instead.
    """


class Rejected(AsedaError):
    """A stage refused an event: it was not admitted (or was shed before it was served).

    Raised by ``send_nowait()`` and ``send_many_nowait()``/``prepare()`` when the queue is full
    or the stage's admission policy refuses; by ``send()`` and ``call()`` when the refusal mode
    is ``"shed"``; and by ``call()`` when its event was shed further on (refused by a later
    stage in shed mode, dropped as the oldest, or past its queue deadline). Counted in the
    stage's statistics by reason. Retrying is safe: the event is not in the graph. It is not
    raised by a send that waits for room (the default), nor for an event whose handler failed.

    Attributes:
        stage: name of the stage that refused the event.
        reason: why, in a few words (``"queue full"``, ``"rate limited"``, ``"deadline"``...).
        queue_length: events in that stage's queue when it refused.
    """

    def __init__(self, stage: str, reason: str, queue_length: int) -> None:
        super().__init__(f"stage {stage!r} refused the event: {reason} ({queue_length} queued)")
        self.stage = stage
        self.reason = reason
        self.queue_length = queue_length

    def __reduce__(self) -> tuple[type[Rejected], tuple[str, str, int]]:
        return (type(self), (self.stage, self.reason, self.queue_length))


class GraphClosed(AsedaError):
    """The running graph no longer admits new events.

    Raised by every way of sending (``send``, ``send_nowait``, ``send_lossy``, ``call``,
    ``send_many``, ``prepare``/``commit``) once the graph has begun to drain (its ``async with``
    block was left), has stopped, or was cancelled, including to a sender that was waiting for
    room at that moment. The event was not admitted. It is not raised for events admitted
    before: a drain finishes those, and a cancelled run counts them in ``abandoned``.
    """


class Dropped(AsedaError):
    """``call()`` found no final value: a stage filtered the event (returned ``aseda.DROP``).

    Raised by ``call()`` once every copy of its event ended without reaching a stage with no
    successors (a filter returned ``aseda.DROP``, or ``aseda.Many([])``). The handlers did not
    fail: the event is counted as processed. Not raised for ``send()``, whose outputs are not
    awaited, nor when a handler raised (``call()`` raises that exception instead).

    Attributes:
        stage: name of the last stage that dropped one of the event's outputs.
    """

    def __init__(self, stage: str) -> None:
        super().__init__(f"stage {stage!r} dropped the event: the call has no final value")
        self.stage = stage


class Abandoned(AsedaError):
    """The graph stopped before this ``call()`` event was finished.

    Raised by ``call()`` in another task when the run was cancelled or failed while the event was
    still queued or being handled. Not raised on a normal exit, which drains every event first.
    """


class RoutingError(AsedaError, LookupError):
    """A handler routed an output to a stage it has no edge to.

    Raised as the event's failure (counted in ``failed``, handled by the stage's ``on_error``
    policy) when a handler returns ``aseda.To(name, value)`` and ``name`` is neither a successor
    nor a declared route of that stage. Declare it with ``stage.routes_to(...)`` in the graph.
    """
