"""Controllers applied by the runtime, on trio's MockClock: workers (and threads) follow load.

These run on trio only: MockClock makes the control loop's periods and the handlers' sleeps
deterministic, so the tests need no real waiting.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
from trio.testing import MockClock

import aseda


@pytest.fixture
def anyio_backend() -> Any:
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


pytestmark = pytest.mark.anyio


class Peak:
    """Records the largest pool size any controller decision asked for."""

    def __init__(self) -> None:
        self.workers = 0

    def __call__(self, stage: str, controller: str, action: aseda.Action) -> None:
        if action.kind == "workers":
            self.workers = max(self.workers, int(action.value))


@pytest.mark.parametrize("mode", ["little", "seda"])
async def test_workers_grow_under_a_backlog_and_shrink_when_idle(mode: str) -> None:
    """A backlog of 100-ms events grows the pool; an idle stretch shrinks it back to min."""

    @aseda.stage(
        workers=(1, 8),
        capacity=1000,
        control=[aseda.WorkerPool(mode=mode, threshold=4, check_every=1, idle_timeout=1.0)],  # type: ignore[arg-type]
    )
    async def io(x: int) -> int:
        await anyio.sleep(0.1)  # a backend call
        return x

    peak = Peak()
    async with aseda.Graph(io).run(control_interval=0.1) as running:
        running.add_decision_listener(peak)
        for i in range(200):
            running.send_nowait(i)
        while running.stats()["io"].processed < 200:  # noqa: ASYNC110 - polls in mock time
            await anyio.sleep(0.1)
        assert peak.workers >= 4
        await anyio.sleep(30)  # idle: spare workers for longer than the timeout
        stats = running.stats()["io"]
        assert stats.workers == 1
        assert stats.last_decision is not None and stats.control == ("workers",)
    # 200 events of 0.1 s on one worker would take 20 s; the controller made it much faster
    assert running.stats().elapsed < 50


async def test_threads_follow_the_pool_size() -> None:
    """The same controller resizes a blocking stage's threads, and none outlive the run."""
    release = threading.Event()

    @aseda.stage(
        workers=(1, 6),
        capacity=1000,
        # seda mode: +1 per check while the queue is long, even before any event finished
        control=[aseda.WorkerPool(mode="seda", threshold=2, check_every=1, idle_timeout=1.0)],
    )
    def blocking(x: int) -> int:
        release.wait(5)  # real time: the test lets the threads go once the pool has grown
        time.sleep(0.001)
        return x

    peak = Peak()
    async with aseda.Graph(blocking).run(control_interval=0.1) as running:
        running.add_decision_listener(peak)
        for i in range(50):
            running.send_nowait(i)

        def threads() -> int:
            return len([t for t in threading.enumerate() if t.name.startswith("aseda:blocking")])

        while peak.workers < 3 or threads() < 3:  # noqa: ASYNC110 - mock time
            await anyio.sleep(0.1)
        assert running.stats()["blocking"].workers >= threads() >= 3  # a thread per worker
        release.set()
        while running.stats()["blocking"].processed < 50:  # noqa: ASYNC110 - mock time
            await anyio.sleep(0.1)
        await anyio.sleep(30)
        assert running.stats()["blocking"].workers == 1
    assert not [t for t in threading.enumerate() if t.name.startswith("aseda:")]
