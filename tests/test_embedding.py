"""aseda inside applications that own their event loop: asyncio, uvloop, trio, and scripts."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest
import trio

import aseda


def pipeline() -> tuple[aseda.Graph, list[Any]]:
    seen: list[Any] = []

    @aseda.stage
    async def double(x: int) -> int:
        return 2 * x

    @aseda.stage
    def record(x: int) -> int:  # a blocking stage: exercises the thread wake-up per backend
        seen.append(x)
        return x

    return aseda.Graph(double >> record), seen


async def feed(running: aseda.RunningGraph) -> int:
    for i in range(100):
        await running.send(i)
    result: int = await running.call(1000)
    return result


def test_inside_plain_asyncio_app() -> None:
    """asyncio.run() with no anyio in the application's own code."""
    graph, seen = pipeline()

    async def app() -> int:
        async with graph.run() as running:
            return await feed(running)

    assert asyncio.run(app()) == 2000
    assert sorted(seen) == sorted([2 * i for i in range(100)] + [2000])


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
def test_inside_uvloop_app() -> None:
    """uvloop's event loop, started by the application."""
    import uvloop

    graph, seen = pipeline()

    async def app() -> int:
        async with graph.run() as running:
            return await feed(running)

    assert uvloop.run(app()) == 2000
    assert len(seen) == 101


def test_inside_plain_trio_app() -> None:
    """trio.run() with a nursery of the application's own around the graph."""
    graph, seen = pipeline()
    results: list[int] = []

    async def app() -> None:
        async with trio.open_nursery() as nursery, graph.run() as running:

            async def client() -> None:
                results.append(await running.call(21))

            nursery.start_soon(client)
            await feed(running)

    trio.run(app)
    assert results == [42]
    assert len(seen) == 102


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_run_helper_for_scripts(backend: str) -> None:
    """aseda.run() starts a loop, feeds, drains and returns the final stats."""
    graph, seen = pipeline()
    stats = aseda.run(graph, feed, backend=backend)
    assert stats.state == "stopped"
    assert stats["record"].processed == 101 == len(seen)
