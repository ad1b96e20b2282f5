"""Admission policies: pure decisions about whether a stage's queue takes an event.

A policy is any callable ``policy(event, stage) -> accept or refuse``, run in the sender's
context (the task calling ``send``, or the upstream worker forwarding an event), as SEDA's
admission predicates are. ``stage`` is a live, read-only :class:`StageView`; reading it
allocates nothing. A policy returns ``None`` (or ``True``) to accept and a :class:`Refusal`,
a reason string, or ``False`` to refuse. Accepting must be cheap: it runs per event.

The classes here keep their state as plain numbers and take the time from an injectable
clock, so they are tested without an event loop. The runtime only calls them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

from ._errors import ConfigError

__all__ = [
    "AdmissionPolicy",
    "Clock",
    "Credits",
    "PerClass",
    "Policy",
    "QueueDeadline",
    "Refusal",
    "StageView",
    "Threshold",
    "TokenBucket",
    "refuse",
]

Clock: TypeAlias = Callable[[], float]

#: Relative tolerance of a token count (float sums of many small refills).
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Refusal:
    """A policy's "no".

    Attributes:
        reason: a few words, counted per reason in the stage's statistics and carried by
            :class:`aseda.Rejected`.
        retry_after: seconds after which the policy may accept again, if it knows (a token
            bucket does); a waiting sender then retries on time instead of on the next dequeue.
    """

    reason: str
    retry_after: float | None = None


def refuse(reason: str, retry_after: float | None = None) -> Refusal:
    """Return a :class:`Refusal` (for custom policies)."""
    return Refusal(reason, retry_after)


@runtime_checkable
class StageView(Protocol):
    """What a policy may read about the stage it guards, live (not a snapshot)."""

    @property
    def name(self) -> str:
        """The stage's name."""
        ...

    @property
    def queue_length(self) -> int:
        """Events waiting in the queue now."""
        ...

    @property
    def capacity(self) -> float:
        """The most events the queue holds."""
        ...

    @property
    def in_flight(self) -> int:
        """Events taken from the queue and not finished yet."""
        ...

    @property
    def workers(self) -> int:
        """Live workers."""
        ...


Policy: TypeAlias = Callable[[Any, StageView], "Refusal | str | bool | None"]


class AdmissionPolicy:
    """Base class of aseda's policies; any callable with the same signature works as well."""

    __slots__ = ()

    def __call__(self, event: Any, stage: StageView) -> Refusal | None:
        raise NotImplementedError

    def admit_many(self, events: Sequence[Any], stage: StageView) -> Refusal | None:
        """Decide for a whole batch at once (atomic batch enqueue): all or none.

        The default asks once per event against a view that counts the earlier ones as
        queued; a stateful policy (a token bucket) overrides it to take its tokens at once.
        """
        for i, event in enumerate(events):
            refusal = self(event, _Plus(stage, i))
            if refusal is not None:
                return refusal
        return None


class _Plus:
    """A StageView with ``extra`` more events queued (for deciding on a batch)."""

    __slots__ = ("_extra", "_stage")

    def __init__(self, stage: StageView, extra: int) -> None:
        self._stage, self._extra = stage, extra

    @property
    def name(self) -> str:
        return self._stage.name

    @property
    def queue_length(self) -> int:
        return self._stage.queue_length + self._extra

    @property
    def capacity(self) -> float:
        return self._stage.capacity

    @property
    def in_flight(self) -> int:
        return self._stage.in_flight

    @property
    def workers(self) -> int:
        return self._stage.workers


def _positive(value: object, what: str, *, whole: bool = False, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number, not {value!r}")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise ConfigError(f"{what} must be finite, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero) or value > 1e300:
        raise ConfigError(
            f"{what} must be {'>= 0' if allow_zero else '> 0'} and finite, not {value!r}"
        )
    if whole and value != int(value):
        raise ConfigError(f"{what} must be a whole number, not {value!r}")


class Threshold(AdmissionPolicy):
    """Refuse while the queue holds ``limit`` events or more (SEDA's queue threshold).

    Below the queue's capacity, so the stage sheds load before it is full.
    """

    __slots__ = ("_refusal", "limit")

    def __init__(self, limit: int) -> None:
        _positive(limit, "Threshold limit", whole=True)
        self.limit = int(limit)
        self._refusal = Refusal("over threshold")

    def __call__(self, event: Any, stage: StageView) -> Refusal | None:
        return self._refusal if stage.queue_length >= self.limit else None

    def __repr__(self) -> str:
        return f"Threshold({self.limit})"


class TokenBucket(AdmissionPolicy):
    """Admit at most ``rate`` events per second on average, in bursts of up to ``burst``.

    Tokens refill continuously from a float clock, so any rate is exact: fractional rates and
    rates far above 1000/s alike (the original refilled in whole milliseconds, which capped it
    near 1000/s). Starts full. ``rate`` may be changed while running (the overload
    controller does).

    Args:
        rate: events per second, > 0.
        burst: bucket depth, >= 1: how many events may pass back to back.
        clock: seconds as a float; ``time.monotonic`` by default, injectable for tests.
    """

    __slots__ = ("_clock", "_last", "_rate", "_tokens", "burst")

    def __init__(self, rate: float, burst: float = 1, *, clock: Clock | None = None) -> None:
        _positive(rate, "TokenBucket rate")
        _positive(burst, "TokenBucket burst")
        if burst < 1:
            raise ConfigError(f"TokenBucket burst must be >= 1 (one event), not {burst!r}")
        self._rate = float(rate)
        self.burst = float(burst)
        self._clock = clock or time.monotonic
        self._tokens = self.burst
        self._last = self._clock()

    @property
    def rate(self) -> float:
        """Events per second; assignable while running."""
        return self._rate

    @rate.setter
    def rate(self, value: float) -> None:
        _positive(value, "TokenBucket rate")
        self._refill()
        self._rate = float(value)

    @property
    def tokens(self) -> float:
        """Tokens in the bucket now."""
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self._rate)
            self._last = now

    def _take(self, count: int) -> Refusal | None:
        self._refill()
        # The tolerance absorbs float rounding in the sum of many small refills, which would
        # otherwise leave the bucket a hair under a whole token and run below its rate.
        if self._tokens >= count - _EPSILON * count:
            self._tokens = max(0.0, self._tokens - count)
            return None
        if count > self.burst:
            return Refusal(f"batch of {count} exceeds the bucket's burst of {self.burst:g}")
        return Refusal("rate limited", (count - self._tokens) / self._rate)

    def __call__(self, event: Any, stage: StageView) -> Refusal | None:
        return self._take(1)

    def admit_many(self, events: Sequence[Any], stage: StageView) -> Refusal | None:
        return self._take(len(events)) if events else None

    def refund(self, count: int) -> None:
        """Give back tokens taken for events that were not admitted after all."""
        self._tokens = min(self.burst, self._tokens + count)

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self._rate:g}, burst={self.burst:g})"


class Credits(AdmissionPolicy):
    """Credit-based flow control: at most ``credits`` events outstanding at this stage.

    An event takes a credit when admitted and gives it back when the stage has finished it
    (queued + in flight < credits). Upstream senders therefore send only while they hold a
    credit; with the default backpressure they wait for one, otherwise they are refused.
    """

    __slots__ = ("_refusal", "credits")

    def __init__(self, credits: int) -> None:
        _positive(credits, "Credits", whole=True)
        self.credits = int(credits)
        self._refusal = Refusal("no credit")

    def available(self, stage: StageView) -> int:
        """Credits not held by an outstanding event."""
        return self.credits - stage.queue_length - stage.in_flight

    def __call__(self, event: Any, stage: StageView) -> Refusal | None:
        return self._refusal if stage.queue_length + stage.in_flight >= self.credits else None

    def __repr__(self) -> str:
        return f"Credits({self.credits})"


class PerClass(AdmissionPolicy):
    """One policy per request class, and lower classes refused first under pressure.

    ``classify(event)`` names the event's class. The class's own policy decides first (one
    token bucket per class, say). Then each class may fill only its share of the queue:
    with ``n`` classes ordered from lowest to highest, the class at position ``i`` is admitted
    while the queue holds fewer than ``capacity * (i + 1) / n`` events, so as the queue fills
    the lowest class is refused first and the highest may use it all.

    Args:
        policies: class -> policy (``None`` for "no policy of its own").
        classify: event -> class; run per event, keep it cheap.
        order: classes from lowest to highest priority; ``sorted(policies)`` by default.
        shares: class -> fraction of the capacity it may fill (0 < share <= 1), replacing
            the even spacing described above.
    """

    __slots__ = (
        "_limits",
        "_refusals",
        "classify",
        "offered",
        "order",
        "policies",
        "refused",
        "shares",
    )

    def __init__(
        self,
        policies: Mapping[Hashable, Policy | None],
        classify: Callable[[Any], Hashable],
        *,
        order: Sequence[Hashable] | None = None,
        shares: Mapping[Hashable, float] | None = None,
    ) -> None:
        if not policies:
            raise ConfigError("PerClass needs at least one class")
        if not callable(classify):
            raise ConfigError(f"PerClass classify must be callable, not {classify!r}")
        for cls, policy in policies.items():
            if policy is not None and not callable(policy):
                raise ConfigError(f"PerClass policy for class {cls!r} is not callable: {policy!r}")
        if order is None:
            try:
                order = sorted(policies)  # type: ignore[type-var]
            except TypeError:
                raise ConfigError(
                    "PerClass classes cannot be sorted; pass order= from lowest to highest"
                ) from None
        if set(order) != set(policies) or len(order) != len(policies):
            raise ConfigError(f"PerClass order {list(order)!r} must list each class once")
        n = len(order)
        # class -> (numerator, denominator): admitted while
        # queue_length * denominator < capacity * numerator, exact for the default spacing.
        limits: dict[Hashable, tuple[float, int]] = {c: (i + 1, n) for i, c in enumerate(order)}
        if shares is not None:
            unknown = set(shares) - set(order)
            if unknown:
                raise ConfigError(
                    f"PerClass shares name unknown classes {sorted(map(repr, unknown))}"
                )
            for cls in order:
                share = shares.get(cls, 1.0)
                if (
                    isinstance(share, bool)
                    or not isinstance(share, (int, float))
                    or not 0 < share <= 1
                ):
                    raise ConfigError(
                        f"PerClass share of class {cls!r} must be in (0, 1], not {share!r}"
                    )
                limits[cls] = (float(share), 1)
        self.policies = dict(policies)
        self.classify = classify
        self.order = tuple(order)
        self.shares = {c: num / den for c, (num, den) in limits.items()}
        self._limits = limits
        self._refusals = {c: Refusal(f"class {c!r} over its share") for c in order}
        #: events offered and refused per class since the policy was made (running totals,
        #: which a controller's observation turns into per-period counts)
        self.offered: dict[Hashable, int] = dict.fromkeys(order, 0)
        self.refused: dict[Hashable, int] = dict.fromkeys(order, 0)

    def _class_of(self, event: Any) -> tuple[Hashable, Policy | None] | Refusal:
        cls = self.classify(event)
        try:
            return cls, self.policies[cls]
        except (KeyError, TypeError):
            return Refusal(f"unknown class {cls!r}")

    def _over_share(self, cls: Hashable, queued: int, capacity: float) -> bool:
        num, den = self._limits[cls]
        return queued * den >= capacity * num

    def __call__(self, event: Any, stage: StageView) -> Refusal | None:
        found = self._class_of(event)
        if type(found) is Refusal:
            return found
        cls, policy = found  # type: ignore[misc]
        self.offered[cls] += 1
        # The share first: it has no side effects, so a refused event spends no token.
        if self._over_share(cls, stage.queue_length, stage.capacity):
            self.refused[cls] += 1
            return self._refusals[cls]
        if policy is not None:
            decision = normalize(policy(event, stage))
            if decision is not None:
                self.refused[cls] += 1
            return decision
        return None

    def admit_many(self, events: Sequence[Any], stage: StageView) -> Refusal | None:
        """All or none: shares are checked first (no side effects), then each class's policy
        decides on its events at once; tokens taken before a later refusal are given back."""
        groups: dict[Hashable, list[Any]] = {}
        classes: list[Hashable] = []
        for event in events:
            found = self._class_of(event)
            if type(found) is Refusal:
                return found
            cls, _ = found  # type: ignore[misc]
            classes.append(cls)
            groups.setdefault(cls, []).append(event)
        for cls, group in groups.items():
            self.offered[cls] += len(group)
        queued = stage.queue_length
        for cls in classes:
            if self._over_share(cls, queued, stage.capacity):
                self._refuse_all(groups)
                return self._refusals[cls]
            queued += 1
        taken: list[tuple[Any, int]] = []
        for cls, group in groups.items():
            policy = self.policies[cls]
            if policy is None:
                continue
            if isinstance(policy, AdmissionPolicy):
                decision = policy.admit_many(group, stage)
            else:
                decision = None
                for i, event in enumerate(group):
                    decision = normalize(policy(event, _Plus(stage, i)))
                    if decision is not None:
                        break
            if decision is not None:
                for earlier, count in taken:
                    earlier.refund(count)
                self._refuse_all(groups)
                return decision
            if hasattr(policy, "refund"):
                taken.append((policy, len(group)))
        return None

    def _refuse_all(self, groups: Mapping[Hashable, Sequence[Any]]) -> None:
        for cls, group in groups.items():
            self.refused[cls] += len(group)

    def __repr__(self) -> str:
        return f"PerClass({self.policies!r})"


class QueueDeadline:
    """Shed events that waited too long while the queue stays overloaded (CoDel for RPC).

    Not an admission check but a dequeue-time one, as in CoDel-based RPC servers: over each
    ``interval`` it tracks the shortest time an event waited. If even that minimum exceeded
    ``target``, the queue is standing (overloaded), and then an event that waited more than
    ``2 * target`` is shed instead of served late. A queue that drains now and then is never
    overloaded, so bursts are served in full.

    Args:
        target: acceptable standing queue delay, seconds (5 ms in CoDel).
        interval: window over which the minimum delay is taken, seconds (100 ms in CoDel).
        clock: seconds as a float; ``time.monotonic`` by default, injectable for tests.
    """

    __slots__ = ("_min", "_window_end", "clock", "interval", "overloaded", "target")

    def __init__(
        self, target: float = 0.005, interval: float = 0.1, *, clock: Clock | None = None
    ) -> None:
        _positive(target, "QueueDeadline target")
        _positive(interval, "QueueDeadline interval")
        self.target = float(target)
        self.interval = float(interval)
        self.clock = clock or time.monotonic
        self.overloaded = False
        self._min = math.inf
        self._window_end = -math.inf

    def shed(self, waited: float, now: float) -> bool:
        """Return True to shed an event that waited ``waited`` seconds, taken at ``now``."""
        if now >= self._window_end:
            if self._window_end != -math.inf:
                self.overloaded = self._min > self.target
            self._min = math.inf
            self._window_end = now + self.interval
        if waited < self._min:
            self._min = waited
        return self.overloaded and waited > 2 * self.target

    def emptied(self) -> None:
        """The queue ran empty: it was not standing in this interval, whatever waited.

        The runtime calls this when a dequeue leaves the queue empty, so a queue that drains
        is judged not overloaded at the next interval, however long it then sits idle.
        """
        self._min = 0.0

    def __repr__(self) -> str:
        return f"QueueDeadline(target={self.target:g}, interval={self.interval:g})"


def normalize(decision: Refusal | str | bool | None) -> Refusal | None:
    """Turn what a policy returned into ``None`` (accept) or a :class:`Refusal`."""
    if decision is None or decision is True:
        return None
    if type(decision) is Refusal:
        return decision
    if decision is False:
        return _REFUSED
    if isinstance(decision, str):
        return Refusal(decision)
    if isinstance(decision, Refusal):
        return decision
    raise TypeError(
        f"an admission policy must return None/True, False, a reason string or a Refusal, "
        f"not {decision!r}"
    )


_REFUSED = Refusal("refused by policy")
