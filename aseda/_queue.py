"""A stage's bounded event queue.

Shaped like anyio's memory object stream (bounded buffer, waiting senders and receivers, an
immutable ``statistics()`` record), with three differences a stage needs:

* putting and taking never checkpoint when they need not wait, so an event moves between
  stages without a scheduler round trip (anyio's ``send()``/``receive()`` always take one);
* workers take events straight from the buffer, so a busy stage drains its queue in a tight
  loop and yields only at chunk boundaries;
* load conditioning (drop-oldest, LIFO service, deadlines, atomic batches) needs the buffer
  itself, which a memory object stream hides.

Waiting uses :class:`anyio.Event`, so the queue works on every anyio backend.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import anyio

__all__ = ["UNBOUNDED", "EventQueue", "event_type", "loop_clock"]


def loop_clock() -> Callable[[], float]:
    """A high-resolution clock in step with the running event loop, looked up once.

    On trio, ``trio.current_time`` (which honours a ``MockClock``, so controllers and tests
    can run on mock time). On asyncio, ``time.perf_counter``: uvloop's ``loop.time()`` ticks
    in whole milliseconds, too coarse for microsecond latencies.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio
        import trio

        return trio.current_time
    return time.perf_counter


def event_type() -> type[anyio.Event]:
    """The running backend's Event class, to create events without anyio's per-call lookup.

    ``anyio.Event()`` finds the backend on every call (about 2 us); a graph looks it up once
    when it starts and creates its events (idle workers, replies, thread jobs) from the class.
    """
    return type(anyio.Event())


class EventQueue:
    """A bounded FIFO of events with non-checkpointing fast paths.

    Not thread-safe: every method runs on the event loop thread.
    """

    __slots__ = (
        "admitted",
        "buffer",
        "capacity",
        "closed",
        "getters",
        "new_event",
        "putters",
        "rejected",
        "reserved",
        "times",
    )

    def __init__(self, capacity: float, new_event: type[anyio.Event] = anyio.Event) -> None:
        self.capacity = capacity
        self.new_event = new_event
        self.buffer: deque[Any] = deque()
        # Events of idle workers; a put wakes one.
        self.getters: list[anyio.Event] = []
        # Events of tasks waiting for room; taking an event wakes one.
        self.putters: deque[anyio.Event] = deque()
        self.closed = False
        self.admitted = 0
        self.rejected = 0
        # Room held by prepared batches (Reservation), not yet committed.
        self.reserved = 0
        # Enqueue times, parallel to buffer, kept only for a stage with a queue deadline.
        self.times: deque[float] | None = None

    async def wait_for_room(self) -> None:
        """Wait until the queue may have room (or is closed); the caller then retries."""
        event = self.new_event()
        self.putters.append(event)
        try:
            await event.wait()
        except BaseException:
            # Pass the wake-up on if we were cancelled after being woken.
            if event.is_set():
                self.wake_putter()
            else:
                self.putters.remove(event)
            raise

    async def wait_for_event(self) -> None:
        """Wait until the queue may hold an event (or is closed, or a worker is retired)."""
        event = self.new_event()
        self.getters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                if self.buffer:
                    self.wake_getter()
            else:
                self.getters.remove(event)
            raise

    def wake_putter(self) -> None:
        """Wake the longest-waiting sender, if any."""
        if self.putters:
            self.putters.popleft().set()

    def wake_getter(self) -> None:
        """Wake one idle worker, if any."""
        if self.getters:
            self.getters.pop().set()

    def wake_all(self) -> None:
        """Wake every waiting worker and sender (close, retire, drain)."""
        # Mutate in place: workers hold references to these containers.
        getters = self.getters[:]
        self.getters.clear()
        for event in getters:
            event.set()
        putters = list(self.putters)
        self.putters.clear()
        for event in putters:
            event.set()

    def close(self) -> None:
        """Stop serving: idle workers exit once the buffer is empty."""
        self.closed = True
        self.wake_all()


#: Capacity of a queue that never refuses for lack of room: on request only.
UNBOUNDED = math.inf
