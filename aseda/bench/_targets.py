"""What a load generator drives: a target, an async callable ``request(client, seq)``.

A target sends one request and returns its outcome: :attr:`Outcome.OK` (or None), or an
outcome with a detail, ``(Outcome.REFUSED, "HTTP 503")``. An exception is an outcome too: the
generators count :class:`aseda.Rejected` as refused (its reason as the detail) and any other
exception as an error (its type's name as the detail). Cancellation is not an outcome: a
request cancelled when a run ends is counted as unfinished.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, TypeAlias

from .._refusals import OnRefuse
from .._runtime import RunningGraph

__all__ = ["Outcome", "Target", "TargetResult", "graph_target"]


class Outcome(str, Enum):
    """How a request ended."""

    #: served: a value, an HTTP status below 400, a reply
    OK = "ok"
    #: refused by the service's load conditioning: :class:`aseda.Rejected`, HTTP 503
    REFUSED = "refused"
    #: anything else: an exception, a failed connection, an HTTP error status
    ERROR = "error"


#: What a target returns: an outcome (None counts as OK), or an outcome and a detail.
TargetResult: TypeAlias = Outcome | tuple[Outcome, str] | None

#: ``async def request(client_id: int, seq: int) -> TargetResult``: sends one request.
Target: TypeAlias = Callable[[int, int], Awaitable[TargetResult]]


def graph_target(
    running: RunningGraph,
    event: Callable[[int, int], Any] | None = None,
    *,
    to: str | None = None,
    on_refuse: OnRefuse | None = None,
) -> Target:
    """A target that sends each request through a running aseda graph with ``call()``.

    The request is served when ``call()`` returns; refused when it raises
    :class:`aseda.Rejected` (the reason is the detail); any other exception of the graph (a
    handler's error, :class:`aseda.Dropped`) counts as an error.

    Args:
        running: the graph, from ``async with graph.run() as running``.
        event: makes the event of request ``seq`` of client ``client_id``; by default the
            event is ``seq``.
        to: the stage to call (by default the graph's entry).
        on_refuse: the refusal mode of the calls (by default the stage's own); ``"shed"``
            makes a refused call answer at once.

    Returns:
        The target, ``async def request(client_id, seq)``.
    """
    call = running.call

    if event is None:

        async def request(client_id: int, seq: int) -> None:
            await call(seq, to=to, on_refuse=on_refuse)

        return request

    make = event

    async def request_event(client_id: int, seq: int) -> None:
        await call(make(client_id, seq), to=to, on_refuse=on_refuse)

    return request_event
