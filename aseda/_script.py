"""Run a graph as a script: start an event loop, feed the graph, drain, return its stats."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from ._graph import Graph
    from ._runtime import RunningGraph
    from ._stats import GraphStats

__all__ = ["run"]


def run(
    graph: Graph,
    feed: Callable[[RunningGraph], Awaitable[Any]],
    *,
    backend: str = "asyncio",
    backend_options: dict[str, Any] | None = None,
) -> GraphStats:
    """Run ``graph`` on a new event loop, calling ``await feed(running)``, then drain it.

    For a script or a ``__main__`` block; inside an async application use
    ``async with graph.run()`` instead.

    Args:
        graph: the graph to run.
        feed: an async function that sends events to the running graph.
        backend: ``"asyncio"`` or ``"trio"``.
        backend_options: passed to :func:`anyio.run` (``{"use_uvloop": True}`` for uvloop).

    Returns:
        The graph's statistics after it drained.
    """

    async def main() -> GraphStats:
        async with graph.run() as running:
            await feed(running)
        return running.stats()

    return anyio.run(main, backend=backend, backend_options=backend_options)
