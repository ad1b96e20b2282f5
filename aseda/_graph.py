"""Composition of stages: ``>>`` chains, fan-out, fan-in, routes, cycles, and their checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import GraphError
from ._outputs import DeadLetter
from ._refusals import Redirect
from ._stage import Stage

if TYPE_CHECKING:
    from ._control import Controller
    from ._instrument import Instrument
    from ._runtime import RunningGraph

__all__ = ["Edge", "Flow", "Graph"]


@dataclass(frozen=True, slots=True)
class Edge:
    """A connection from one stage to another.

    ``kind`` is ``"next"`` (plain outputs flow along it), ``"route"`` (only ``aseda.To``
    outputs), ``"dead_letter"`` (failure records) or ``"redirect"`` (refused events).
    ``back`` marks an edge that closes a cycle: events re-entering through it skip admission,
    so a cycle cannot deadlock on its own full queues.
    """

    source: str
    target: str
    kind: str = "next"
    back: bool = False


class Flow:
    """Stages joined by ``>>``: a fragment of a graph, not yet checked.

    ``a >> b`` chains, ``a >> [b, c]`` fans out (every output goes to both),
    ``[a, b] >> c`` fans in.
    """

    __slots__ = ("edges", "heads", "routes_", "stages", "tails")

    def __init__(
        self,
        stages: Sequence[Stage],
        heads: Sequence[Stage],
        tails: Sequence[Stage],
        edges: Sequence[tuple[Stage, Stage]] = (),
        routes: Sequence[tuple[Stage, Stage | str]] = (),
    ) -> None:
        self.stages = tuple(_unique(stages))
        self.heads = tuple(_unique(heads))
        self.tails = tuple(_unique(tails))
        self.edges = tuple(edges)
        self.routes_ = tuple(routes)

    @classmethod
    def of(cls, value: Any) -> Flow:
        """Turn a Stage, a Flow, or a list of them into a Flow."""
        if isinstance(value, Flow):
            return value
        if isinstance(value, Stage):
            return cls([value], [value], [value])
        if isinstance(value, (list, tuple)) and value:
            parts = [cls.of(item) for item in value]
            return cls(
                [s for p in parts for s in p.stages],
                [s for p in parts for s in p.heads],
                [s for p in parts for s in p.tails],
                [e for p in parts for e in p.edges],
                [r for p in parts for r in p.routes_],
            )
        raise GraphError(
            f"{value!r} is not a stage: decorate the handler with @aseda.stage, "
            "or pass a non-empty list of stages"
        )

    @classmethod
    def routes(cls, source: Stage, targets: Iterable[Stage | str]) -> Flow:
        """A flow holding only route declarations from ``source``."""
        targets = tuple(targets)
        if not targets:
            raise GraphError(f"stage {source.name!r}: routes_to() needs at least one stage")
        stages = [source, *(t for t in targets if isinstance(t, Stage))]
        for target in targets:
            if not isinstance(target, (Stage, str)):
                raise GraphError(f"route target {target!r} is neither a stage nor a stage name")
        return cls(stages, [source], [source], routes=[(source, t) for t in targets])

    def __rshift__(self, other: Any) -> Flow:
        return self.then(other)

    def then(self, other: Any) -> Flow:
        """``self >> other``: every tail of this flow feeds every head of ``other``."""
        right = Flow.of(other)
        joined = [(a, b) for a in self.tails for b in right.heads]
        return Flow(
            [*self.stages, *right.stages],
            self.heads,
            right.tails,
            [*self.edges, *right.edges, *joined],
            [*self.routes_, *right.routes_],
        )

    def __rrshift__(self, other: Any) -> Flow:
        return Flow.of(other).then(self)

    def __repr__(self) -> str:
        return f"<aseda.Flow {' '.join(s.name for s in self.stages)}>"


def _unique(stages: Iterable[Stage]) -> list[Stage]:
    seen: set[int] = set()
    out = []
    for s in stages:
        if id(s) not in seen:
            seen.add(id(s))
            out.append(s)
    return out


class Graph:
    """A checked network of stages, ready to run.

    Args:
        *parts: stages, flows (``a >> b``) or lists of them; their union is the graph.
        entry: the stage that ``send()`` and ``call()`` feed by default; the first stage of
            the first part if not given. Any stage can be fed by name with ``to=``.

    Raises:
        GraphError: two different stages share a name; a route or dead-letter target is not
            in the graph; a stage cannot be reached from the entry or any other source.
    """

    def __init__(
        self, *parts: Stage | Flow | Sequence[Stage | Flow], entry: Stage | str | None = None
    ) -> None:
        if not parts:
            raise GraphError("a graph needs at least one stage")
        flows = [Flow.of(p) for p in parts]
        by_name: dict[str, Stage] = {}
        for flow in flows:
            for s in flow.stages:
                other = by_name.setdefault(s.name, s)
                if other is not s:
                    raise GraphError(
                        f"two different stages are named {s.name!r}; give one another name="
                    )
        self._stages = by_name
        edges: dict[tuple[str, str, str], None] = {}
        for flow in flows:
            for a, b in flow.edges:
                edges[(a.name, b.name, "next")] = None
            for a, t in flow.routes_:
                target = t if isinstance(t, str) else t.name
                if target not in by_name:
                    raise GraphError(
                        f"stage {a.name!r} routes to {target!r}, which is not in the graph"
                    )
                edges[(a.name, target, "route")] = None
        for s in by_name.values():
            if isinstance(s.on_refuse, Redirect):
                target = s.on_refuse.stage
                if target not in by_name:
                    raise GraphError(
                        f"stage {s.name!r} redirects refused events to {target!r}, "
                        "which is not in the graph"
                    )
                if target == s.name:
                    raise GraphError(f"stage {s.name!r} cannot redirect to itself")
                edges[(s.name, target, "redirect")] = None
            if isinstance(s.on_error, DeadLetter):
                target = s.on_error.stage
                if target not in by_name:
                    raise GraphError(
                        f"stage {s.name!r} sends failures to dead-letter stage {target!r}, "
                        "which is not in the graph"
                    )
                if target == s.name:
                    raise GraphError(f"stage {s.name!r} cannot be its own dead-letter stage")
                edges[(s.name, target, "dead_letter")] = None
        if entry is None:
            self.entry = flows[0].heads[0].name
        else:
            self.entry = entry if isinstance(entry, str) else entry.name
            if self.entry not in by_name or (
                isinstance(entry, Stage) and by_name[self.entry] is not entry
            ):
                raise GraphError(f"entry stage {self.entry!r} is not in the graph")
        self.edges = self._mark_back_edges(list(edges))
        self._check_reachable()
        self._check_redirects()

    # Checks ---------------------------------------------------------------------------------

    def _roots(self) -> list[str]:
        has_inbound = {e[1] for e in self._raw_edges}
        return [self.entry] + [n for n in self._stages if n not in has_inbound and n != self.entry]

    def _mark_back_edges(self, raw: list[tuple[str, str, str]]) -> tuple[Edge, ...]:
        self._raw_edges = raw
        out: dict[str, list[tuple[str, str, str]]] = {n: [] for n in self._stages}
        for e in raw:
            out[e[0]].append(e)
        back: set[tuple[str, str, str]] = set()
        state: dict[str, int] = {}  # 1 on the DFS stack, 2 finished
        for root in self._roots():
            if root in state:
                continue
            stack: list[tuple[str, int]] = [(root, 0)]
            state[root] = 1
            while stack:
                node, i = stack.pop()
                if i < len(out[node]):
                    stack.append((node, i + 1))
                    e = out[node][i]
                    if state.get(e[1]) == 1:
                        back.add(e)
                    elif e[1] not in state:
                        state[e[1]] = 1
                        stack.append((e[1], 0))
                else:
                    state[node] = 2
        self._visited = set(state)
        return tuple(Edge(a, b, kind, (a, b, kind) in back) for a, b, kind in raw)

    def _check_reachable(self) -> None:
        unreachable = [n for n in self._stages if n not in self._visited]
        if unreachable:
            raise GraphError(
                f"no event can reach stage(s) {', '.join(map(repr, unreachable))}: every "
                "stage in a cycle needs a way in from a stage outside it"
            )

    def _check_redirects(self) -> None:
        """A refused event redirected to a stage that leads back to the refusing one would go
        round until that stage had room again: refuse such a graph."""
        out: dict[str, set[str]] = {n: set() for n in self._stages}
        for e in self.edges:
            out[e.source].add(e.target)
        for e in self.edges:
            if e.kind != "redirect":
                continue
            seen, todo = {e.target}, [e.target]
            while todo:
                for nxt in out[todo.pop()]:
                    if nxt == e.source:
                        raise GraphError(
                            f"stage {e.source!r} redirects refused events to {e.target!r}, "
                            f"which leads back to {e.source!r}: they would go round while "
                            f"{e.source!r} is full; redirect to a stage off that path"
                        )
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)

    # Introspection ---------------------------------------------------------------------------

    @property
    def stages(self) -> tuple[Stage, ...]:
        """Every stage, in the order first declared."""
        return tuple(self._stages.values())

    def __getitem__(self, name: str) -> Stage:
        return self._stages[name]

    def __contains__(self, name: object) -> bool:
        return name in self._stages

    def successors(self, name: str, kind: str = "next") -> tuple[str, ...]:
        """Names of the stages ``name`` sends to along edges of ``kind``."""
        return tuple(e.target for e in self.edges if e.source == name and e.kind == kind)

    def __repr__(self) -> str:
        return f"<aseda.Graph entry={self.entry!r} stages={list(self._stages)}>"

    # Running ---------------------------------------------------------------------------------

    @asynccontextmanager
    async def run(
        self,
        *,
        statistics: bool = True,
        sample_rate: float = 1000.0,
        trace: float = 0.0,
        instruments: Sequence[Instrument] = (),
        control: Sequence[Controller] | Mapping[str, Sequence[Controller]] = (),
        control_interval: float = 1.0,
    ) -> AsyncIterator[RunningGraph]:
        """Run the graph inside the current task: ``async with graph.run() as running``.

        Starts every stage (init hooks, then workers) in a task group. Leaving the block
        normally drains: new sends are refused, every admitted event is finished, then the
        workers stop and close hooks run. If the block raises or is cancelled, the graph is
        cancelled instead and the number of abandoned events is logged and kept in
        ``running.abandoned``. A stage with ``on_error="fail"`` fails the run: its exception
        leaves the block inside an ExceptionGroup, as from any task group.

        Args:
            statistics: measure latency (queue wait, service, time since entry) on sampled
                events and every ``call()``. Events that are not sampled pay nothing.
            sample_rate: about how many events a second to sample; the sampling interval
                adapts to the load.
            trace: the fraction of events to trace (0.01 is 1 %): each traced event's visit
                to each stage is logged as a structlog ``"trace"`` event and handed to the
                instruments' ``span`` hook.
            instruments: :class:`aseda.Instrument` objects whose hooks are called on start,
                stop, traced spans, refusals and failures.
            control: controllers for every stage that declares none of its own, or a mapping
                stage name (or ``"*"``) -> controllers. Each run works on copies.
            control_interval: seconds between observations fed to the controllers.
        """
        from ._runtime import RunningGraph

        async with RunningGraph._start(
            self,
            statistics=statistics,
            sample_rate=sample_rate,
            trace=trace,
            instruments=instruments,
            control=control,
            control_interval=control_interval,
        ) as running:
            yield running
