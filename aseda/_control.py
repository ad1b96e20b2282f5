"""The controller interface: observations in, actions out (sans-io, like h11).

A controller is a plain object fed one :class:`Observation` of its stage per sampling period;
it returns the :class:`Action` objects the runtime should apply. It never sees a clock, a task
or the graph: the runtime samples and applies, so every controller is tested by feeding it
made-up observations.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Action", "Controller", "Observation"]


@dataclass(frozen=True, slots=True)
class Observation:
    """What the runtime saw of one stage over the last sampling period.

    Counts are for the period (since the previous observation); levels are now.
    """

    #: the stage's name
    stage: str
    #: seconds on the runtime's clock when observed
    time: float
    #: seconds since the previous observation (the first one: since the stage started)
    interval: float
    #: events waiting in the queue now, and the queue's capacity
    queue_length: int
    capacity: float
    #: events admitted to the queue during the period
    arrivals: int
    #: events the handler finished (processed or failed) during the period
    completions: int
    #: events refused or shed during the period
    refused: int
    #: live workers now, and the pool's bounds
    workers: int
    workers_min: int
    workers_max: int
    #: events being handled now (taken from the queue, not finished)
    busy: int
    #: the batch size in force (None: a per-event stage) and the stage's declared maximum
    batch: int | None
    batch_max: int | None
    #: response times (queue wait + service, seconds) of the events sampled in the period,
    #: oldest first; a controller keeps what it needs across periods
    response_samples: tuple[float, ...] = ()
    #: service times (seconds) sampled in the period
    service_samples: tuple[float, ...] = ()
    #: the admission token bucket's rate now, if the stage has one: under the key None for a
    #: plain TokenBucket, under each class for PerClass
    rates: dict[Hashable, float] = field(default_factory=dict)
    #: the concurrency limit in force (a Credits policy), if any
    credits: int | None = None
    #: with a PerClass policy: each class's response samples of the period
    class_response_samples: dict[Hashable, tuple[float, ...]] = field(default_factory=dict)
    #: with a PerClass policy: events of each class offered to the stage during the period
    #: (admitted or not), and those refused; so a controller sees each class's demand
    class_offered: dict[Hashable, int] = field(default_factory=dict)
    class_refused: dict[Hashable, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Action:
    """A change a controller asks for, and why (logged and shown in stats).

    ``kind`` is ``"workers"`` (value: the new pool size), ``"batch"`` (the new batch size),
    ``"rate"`` (a token bucket's rate, events/s; ``cls`` names the class for PerClass),
    ``"threshold"`` (an admission threshold), ``"credits"`` (a concurrency limit) or
    ``"degrade"`` (value 1: serve every event with the stage's degraded handler, the one its
    ``on_refuse=aseda.Degrade(...)`` names; 0: back to the stage's own handler).
    """

    kind: str
    value: float
    reason: str
    cls: Hashable | None = None


@runtime_checkable
class Controller(Protocol):
    """What the runtime needs of a controller."""

    #: a short name ("workers", "batching", "usits", ...), shown in stats and logs
    name: str

    def observe(self, observation: Observation) -> Sequence[Action]:
        """Take one period's observation; return the actions to apply (often none)."""
        ...
