"""Instruments: user hooks into a running graph, called only where they cost nothing extra.

Modelled on trio's ``Instrument``: subclass :class:`Instrument` and override the hooks you
want. A hook that is not overridden is never called, so an unused instrument costs nothing;
hooks run only on paths that are already slow (a traced event, a refusal, a failure, start
and stop), never per ordinary event. An instrument whose hook raises is removed and logged,
and the graph goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._log import logger

if TYPE_CHECKING:
    from ._graph import Graph
    from ._stats import GraphStats

__all__ = ["HOOKS", "Instrument", "Instruments", "Span"]


@dataclass(frozen=True, slots=True)
class Span:
    """One traced event's visit to one stage. Times are seconds since the run began.

    Attributes:
        trace_id: the same for every span of one event (and its copies, after fan-out).
        stage: the stage visited.
        enqueued: when the event entered the stage's queue.
        started: when the handler began (for a thread or batch stage, its chunk or batch).
        ended: when the handler returned or raised.
        outcome: ``"ok"`` or ``"failed"``.
    """

    trace_id: int
    stage: str
    enqueued: float
    started: float
    ended: float
    outcome: str


class Instrument:
    """Base class of instruments; override any of the hooks."""

    def graph_started(self, graph: Graph) -> None:
        """The graph's stages were started."""

    def graph_stopped(self, stats: GraphStats) -> None:
        """The graph stopped (drained, cancelled or failed); its final statistics."""

    def span(self, span: Span) -> None:
        """A traced event finished at a stage (see ``graph.run(trace=...)``)."""

    def refused(self, stage: str, reason: str) -> None:
        """A stage refused or shed an event (only refusals that were not waited out)."""

    def failed(self, stage: str, error: BaseException) -> None:
        """A stage's handler raised."""


#: The hook names, in the order they are documented.
HOOKS = ("graph_started", "graph_stopped", "span", "refused", "failed")


class Instruments:
    """The instruments of one run, with the list of overriders of each hook."""

    def __init__(self, instruments: Sequence[object]) -> None:
        for instrument in instruments:
            if not isinstance(instrument, Instrument):
                from ._errors import ConfigError

                raise ConfigError(f"{instrument!r} is not an aseda.Instrument")
        self._all: list[Instrument] = [i for i in instruments if isinstance(i, Instrument)]
        self.hooks: dict[str, list[Callable[..., Any]]] = {}
        self._index()

    def _index(self) -> None:
        for name in HOOKS:
            base = getattr(Instrument, name)
            self.hooks[name] = [
                getattr(i, name) for i in self._all if getattr(type(i), name) is not base
            ]

    def call(self, hook: str, *args: Any) -> None:
        """Call every overrider of ``hook``; remove an instrument whose hook raises."""
        for fn in list(self.hooks[hook]):
            try:
                fn(*args)
            except Exception as exc:
                instrument = getattr(fn, "__self__", None)
                logger.error(
                    "instrument failed and was removed",
                    instrument=repr(instrument),
                    hook=hook,
                    error=repr(exc),
                    exc_info=exc,
                )
                if instrument in self._all:
                    self._all.remove(instrument)
                self._index()
