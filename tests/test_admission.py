"""Admission policies, decided by hand: a fake stage view and a clock advanced by the test."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aseda
from aseda._admission import normalize


@dataclass
class View:
    """A stand-in for the live StageView a policy reads."""

    name: str = "s"
    queue_length: int = 0
    capacity: float = 100
    in_flight: int = 0
    workers: int = 1


class Clock:
    """Seconds as a float, moved only by the test."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def ident(x: Any) -> Any:
    return x


def drain(bucket: aseda.TokenBucket, view: View, limit: int = 10_000) -> int:
    """Take single tokens until refused; return how many were taken."""
    taken = 0
    while taken < limit and bucket(None, view) is None:
        taken += 1
    return taken


BAD_WHOLE = [0, -1, 2.5, True, False, "3", None, math.nan, math.inf, -math.inf]
BAD_POSITIVE = [0, -1, -0.5, True, "1", None, math.nan, math.inf, -math.inf]


# The fake view ---------------------------------------------------------------------------


def test_fake_view_is_a_stage_view() -> None:
    """The test's fake view satisfies the StageView protocol the policies read."""
    assert isinstance(View(), aseda.StageView)


# Refusal, refuse, normalize --------------------------------------------------------------


def test_refuse_builds_a_refusal() -> None:
    """refuse(reason, retry_after) is the same as Refusal(reason, retry_after)."""
    assert aseda.Refusal("busy", 1.5) == aseda.refuse("busy", 1.5)
    assert aseda.Refusal("busy", None) == aseda.refuse("busy")


def test_refusal_is_frozen() -> None:
    """A Refusal cannot be changed once made (shared refusals stay intact)."""
    refusal = aseda.refuse("busy")
    with pytest.raises(AttributeError):
        refusal.reason = "other"  # type: ignore[misc]


@pytest.mark.parametrize("decision", [None, True])
def test_normalize_accepts(decision: Any) -> None:
    """None and True mean "accept"."""
    assert normalize(decision) is None


def test_normalize_false() -> None:
    """False refuses with a generic reason."""
    assert aseda.Refusal("refused by policy") == normalize(False)


def test_normalize_reason_string() -> None:
    """A string refuses with that string as the reason."""
    assert aseda.Refusal("too busy") == normalize("too busy")


def test_normalize_refusal_passes_through() -> None:
    """A Refusal (or a subclass of it) is returned as it is."""

    class Mine(aseda.Refusal):
        pass

    refusal = aseda.Refusal("x", 2.0)
    mine = Mine("y")
    assert normalize(refusal) is refusal
    assert normalize(mine) is mine


@pytest.mark.parametrize("decision", [0, 1, 1.0, [], ["no"], object(), b"no"])
def test_normalize_rejects_anything_else(decision: Any) -> None:
    """Any other return value is a programming error: TypeError."""
    with pytest.raises(TypeError, match="must return"):
        normalize(decision)


# AdmissionPolicy ---------------------------------------------------------------------------


class AtMostThree(aseda.AdmissionPolicy):
    """Refuses while three or more events are queued; records the views it saw."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, float, int, int]] = []

    def __call__(self, event: Any, stage: aseda.StageView) -> aseda.Refusal | None:
        self.seen.append(
            (stage.name, stage.queue_length, stage.capacity, stage.in_flight, stage.workers)
        )
        return aseda.refuse("three") if stage.queue_length >= 3 else None


def test_base_policy_call_is_abstract() -> None:
    """The base class does not decide anything by itself."""
    with pytest.raises(NotImplementedError):
        aseda.AdmissionPolicy()(None, View())


def test_admit_many_default_counts_earlier_events_as_queued() -> None:
    """The default admit_many asks per event, seeing the batch's earlier events as queued."""
    policy = AtMostThree()
    assert policy.admit_many([1, 2, 3], View()) is None
    assert [seen[1] for seen in policy.seen] == [0, 1, 2]
    assert aseda.refuse("three") == policy.admit_many([1, 2, 3, 4], View())
    assert aseda.refuse("three") == policy.admit_many([1, 2, 3], View(queue_length=1))


def test_admit_many_default_passes_the_rest_of_the_view_through() -> None:
    """Only queue_length is adjusted; name, capacity, in_flight and workers are the stage's."""
    policy = AtMostThree()
    view = View(name="parse", queue_length=1, capacity=7, in_flight=4, workers=3)
    assert policy.admit_many(["a", "b"], view) is None
    assert policy.seen == [("parse", 1, 7, 4, 3), ("parse", 2, 7, 4, 3)]


def test_admit_many_default_empty_batch() -> None:
    """An empty batch is admitted without asking the policy."""
    policy = AtMostThree()
    assert policy.admit_many([], View(queue_length=99)) is None
    assert policy.seen == []


# Threshold -------------------------------------------------------------------------------


def test_threshold_accepts_below_limit() -> None:
    """Below the limit every event is admitted."""
    policy = aseda.Threshold(3)
    assert [policy(None, View(queue_length=q)) for q in range(3)] == [None, None, None]


@pytest.mark.parametrize("queued", [3, 4, 1000])
def test_threshold_refuses_at_and_above_limit(queued: int) -> None:
    """At the limit and above, events are refused as "over threshold"."""
    assert aseda.Refusal("over threshold") == aseda.Threshold(3)(None, View(queue_length=queued))


def test_threshold_ignores_in_flight_and_capacity() -> None:
    """Only the queue length counts, not the events being worked on."""
    assert aseda.Threshold(3)(None, View(queue_length=2, in_flight=50, capacity=2)) is None


def test_threshold_whole_float_limit() -> None:
    """A float that is a whole number is taken as that int."""
    policy = aseda.Threshold(4.0)  # type: ignore[arg-type]
    assert (policy.limit, repr(policy)) == (4, "Threshold(4)")
    assert type(policy.limit) is int


def test_threshold_admit_many() -> None:
    """A batch is admitted only if its last event still fits under the limit."""
    policy = aseda.Threshold(3)
    assert policy.admit_many([1, 2, 3], View()) is None
    assert aseda.Refusal("over threshold") == policy.admit_many([1, 2, 3, 4], View())
    assert aseda.Refusal("over threshold") == policy.admit_many([1, 2], View(queue_length=2))


@pytest.mark.parametrize("limit", BAD_WHOLE)
def test_threshold_bad_limit(limit: Any) -> None:
    """A limit that is not a positive whole number is refused at construction."""
    with pytest.raises(aseda.ConfigError, match="Threshold limit"):
        aseda.Threshold(limit)


@pytest.mark.parametrize("make", [aseda.Threshold, aseda.Credits, aseda.TokenBucket])
def test_huge_int_never_escapes_as_overflow_error(make: Any) -> None:
    """A huge int is either accepted or refused with ConfigError, never an OverflowError."""
    with contextlib.suppress(aseda.ConfigError):
        make(10**400)


# TokenBucket -----------------------------------------------------------------------------


def test_token_bucket_starts_full() -> None:
    """A fresh bucket lets ``burst`` events through back to back, then refuses."""
    clock = Clock()
    bucket = aseda.TokenBucket(2, burst=5, clock=clock)
    assert drain(bucket, View()) == 5
    refusal = bucket(None, View())
    assert refusal is not None
    assert (refusal.reason, refusal.retry_after) == ("rate limited", 0.5)


def test_token_bucket_retry_after_is_the_time_to_the_next_token() -> None:
    """retry_after is how long until enough tokens have refilled, counting partial ones."""
    clock = Clock()
    bucket = aseda.TokenBucket(4, burst=2, clock=clock)
    assert drain(bucket, View()) == 2
    clock.advance(0.125)  # half a token
    refusal = bucket(None, View())
    assert refusal is not None
    assert refusal.retry_after == 0.125
    clock.advance(0.125)
    assert bucket(None, View()) is None
    assert aseda.Refusal("rate limited", 0.5) == bucket.admit_many([1, 2], View())


def test_token_bucket_refused_event_takes_nothing() -> None:
    """A refusal leaves the partial token in the bucket."""
    clock = Clock()
    bucket = aseda.TokenBucket(1, clock=clock)
    assert bucket(None, View()) is None
    clock.advance(0.75)
    assert bucket(None, View()) is not None
    assert bucket.tokens == 0.75
    clock.advance(0.25)
    assert bucket(None, View()) is None


def test_token_bucket_fractional_rate() -> None:
    """rate=0.5 admits exactly one event every 2 seconds."""
    clock = Clock()
    bucket = aseda.TokenBucket(0.5, clock=clock)
    assert bucket(None, View()) is None
    clock.now = 1.999
    refusal = bucket(None, View())
    assert refusal is not None
    assert refusal.retry_after == pytest.approx(0.001)
    clock.now = 2.0
    assert bucket(None, View()) is None
    assert bucket(None, View()) is not None


def test_token_bucket_fractional_rate_over_many_steps() -> None:
    """Polling a rate=0.5 bucket every 100 ms for 20 s admits 1 + 10 events."""
    clock = Clock()
    bucket = aseda.TokenBucket(0.5, clock=clock)
    admitted = 0
    for step in range(201):
        clock.now = step / 10
        admitted += bucket(None, View()) is None
    assert admitted == 11


def test_token_bucket_high_rate_has_no_millisecond_cap() -> None:
    """At 100,000/s exactly 100 tokens refill in 1 ms (no whole-millisecond quantisation)."""
    clock = Clock()
    bucket = aseda.TokenBucket(100_000, burst=1000, clock=clock)
    assert drain(bucket, View()) == 1000
    clock.advance(0.001)
    assert bucket.tokens == pytest.approx(100)
    assert drain(bucket, View()) == 100


def test_token_bucket_high_rate_microsecond_steps() -> None:
    """At 100,000/s, 10,000 polls 1 us apart admit burst + 1,000 events (no 1000/s cap)."""
    clock = Clock()
    bucket = aseda.TokenBucket(100_000, burst=10, clock=clock)
    admitted = 0
    for step in range(10_001):
        clock.now = step / 1_000_000
        admitted += bucket(None, View()) is None
    assert admitted == 10 + 1000


@pytest.mark.parametrize(
    ("rate", "step", "steps"),
    # rate * step is 1/k of a token: a bucket one token deep polled off that grid loses the
    # part of a token it cannot hold (that is what depth 1 means), so test on the grid.
    [(100_000, 1e-6, 10_000), (1000, 1e-4, 10_000), (2.5, 0.004, 10_000)],
)
def test_token_bucket_exact_rate_with_burst_one(rate: float, step: float, steps: int) -> None:
    """Polled often, a burst-1 bucket admits the first event plus rate * elapsed more."""
    clock = Clock()
    bucket = aseda.TokenBucket(rate, burst=1, clock=clock)
    admitted = 0
    for k in range(steps + 1):
        clock.now = k * step
        admitted += bucket(None, View()) is None
    assert 1 + round(rate * step * steps) == admitted


def test_token_bucket_never_exceeds_burst() -> None:
    """However long it sits idle, the bucket holds at most ``burst`` tokens."""
    clock = Clock()
    bucket = aseda.TokenBucket(1000, burst=3, clock=clock)
    assert drain(bucket, View(), limit=1) == 1
    clock.advance(1e6)
    assert bucket.tokens == 3.0
    assert drain(bucket, View()) == 3


def test_token_bucket_clock_going_backwards_adds_nothing() -> None:
    """A clock that steps back neither adds nor removes tokens."""
    clock = Clock(100.0)
    bucket = aseda.TokenBucket(1, burst=2, clock=clock)
    assert drain(bucket, View()) == 2
    clock.now = 50.0
    assert bucket.tokens == 0.0
    clock.now = 100.5
    assert bucket.tokens == 0.5


def test_token_bucket_rate_change_keeps_earned_tokens() -> None:
    """Changing rate while running keeps the tokens earned at the old rate, no more."""
    clock = Clock()
    bucket = aseda.TokenBucket(1, burst=10, clock=clock)
    assert drain(bucket, View()) == 10
    clock.advance(2)
    bucket.rate = 100
    assert (bucket.tokens, bucket.rate) == (2.0, 100.0)
    clock.advance(0.01)
    assert bucket.tokens == pytest.approx(3)


def test_token_bucket_rate_lowered_keeps_earned_tokens() -> None:
    """Lowering rate does not take back tokens earned before the change."""
    clock = Clock()
    bucket = aseda.TokenBucket(100, burst=10, clock=clock)
    assert drain(bucket, View()) == 10
    clock.advance(0.05)
    bucket.rate = 1
    clock.advance(1)
    assert bucket.tokens == pytest.approx(6)


@pytest.mark.parametrize("rate", BAD_POSITIVE)
def test_token_bucket_bad_rate_assignment(rate: Any) -> None:
    """A bad rate assigned while running is refused and the old rate stays."""
    bucket = aseda.TokenBucket(5, clock=Clock())
    with pytest.raises(aseda.ConfigError, match="rate"):
        bucket.rate = rate
    assert bucket.rate == 5.0


def test_token_bucket_admit_many_takes_tokens_at_once() -> None:
    """A batch takes all its tokens or none."""
    clock = Clock()
    bucket = aseda.TokenBucket(1, burst=5, clock=clock)
    assert bucket.admit_many([1, 2, 3], View()) is None
    assert bucket.tokens == 2.0
    assert aseda.Refusal("rate limited", 1.0) == bucket.admit_many([1, 2, 3], View())
    assert bucket.tokens == 2.0
    assert bucket.admit_many([1, 2], View()) is None
    assert bucket.tokens == 0.0


def test_token_bucket_admit_many_empty_batch() -> None:
    """An empty batch is admitted and takes nothing, even from an empty bucket."""
    bucket = aseda.TokenBucket(1, clock=Clock())
    assert bucket(None, View()) is None
    assert bucket.admit_many([], View()) is None
    assert bucket.tokens == 0.0


def test_token_bucket_batch_larger_than_burst() -> None:
    """A batch that could never fit is refused with a reason saying so, and no retry time."""
    bucket = aseda.TokenBucket(1, burst=3, clock=Clock())
    refusal = bucket.admit_many([1, 2, 3, 4], View())
    assert aseda.Refusal("batch of 4 exceeds the bucket's burst of 3", None) == refusal
    assert bucket.tokens == 3.0


def test_token_bucket_repr() -> None:
    """The repr shows rate and burst."""
    assert repr(aseda.TokenBucket(2.5, 4, clock=Clock())) == "TokenBucket(rate=2.5, burst=4)"


@pytest.mark.parametrize("rate", BAD_POSITIVE)
def test_token_bucket_bad_rate(rate: Any) -> None:
    """rate must be a finite number > 0."""
    with pytest.raises(aseda.ConfigError, match="TokenBucket rate"):
        aseda.TokenBucket(rate, clock=Clock())


@pytest.mark.parametrize("burst", [0, 0.5, 0.999, -1, True, "2", math.nan, math.inf])
def test_token_bucket_bad_burst(burst: Any) -> None:
    """burst must be a finite number >= 1."""
    with pytest.raises(aseda.ConfigError, match="TokenBucket burst"):
        aseda.TokenBucket(1, burst, clock=Clock())


@dataclass
class ExactBucket:
    """The reference model: the same continuous refill, in exact rational arithmetic."""

    rate: Fraction
    burst: Fraction
    tokens: Fraction
    last: Fraction

    def take(self, now: Fraction, count: int) -> aseda.Refusal | None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens >= count:
            self.tokens -= count
            return None
        if count > self.burst:
            return aseda.Refusal(f"batch of {count} exceeds the bucket's burst of {self.burst}")
        return aseda.Refusal("rate limited", float((count - self.tokens) / self.rate))


# Dyadic rates and clock steps (multiples of 1/1024 s) keep float arithmetic exact, so the
# float bucket must match the rational model decision for decision.
RATES = st.sampled_from([0.25, 0.5, 1.0, 3.0, 10.0, 1000.0, 100_000.0])
REQUESTS = st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 6), st.booleans()), max_size=60)


@settings(max_examples=200, deadline=None)
@given(rate=RATES, burst=st.integers(1, 8), requests=REQUESTS)
def test_token_bucket_matches_exact_model(
    rate: float, burst: int, requests: list[tuple[int, int, bool]]
) -> None:
    """Over any clock advances and requests, decisions match an exact model and the rate bound."""
    clock = Clock()
    bucket = aseda.TokenBucket(rate, burst, clock=clock)
    model = ExactBucket(Fraction(rate), Fraction(burst), Fraction(burst), Fraction(0))
    admitted = 0
    for ticks, count, single in requests:
        clock.advance(ticks / 1024)
        now = Fraction(clock.now)
        if count == 1 and single:
            actual = bucket(None, View())
        else:
            actual = bucket.admit_many(list(range(count)), View())
        expected = model.take(now, count) if count else None
        assert expected == actual
        if actual is None:
            admitted += count
        assert admitted <= burst + Fraction(rate) * now
        assert 0 <= bucket.tokens <= burst


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.01, 1e6),
    burst=st.integers(1, 50),
    steps=st.lists(st.floats(0, 0.05), max_size=80),
)
def test_token_bucket_never_beats_its_rate(rate: float, burst: int, steps: list[float]) -> None:
    """Over any (non-dyadic) clock advances, admitted <= burst + rate * elapsed."""
    clock = Clock()
    bucket = aseda.TokenBucket(rate, burst, clock=clock)
    admitted = drain(bucket, View())
    assert burst == admitted
    for step in steps:
        clock.advance(step)
        admitted += drain(bucket, View())
        assert admitted <= burst + rate * clock.now + 1e-6
        assert 0 <= bucket.tokens <= burst


# Credits ---------------------------------------------------------------------------------


def test_credits_count_queued_and_in_flight() -> None:
    """Events are admitted while queued + in flight < credits."""
    policy = aseda.Credits(3)
    assert policy(None, View(queue_length=1, in_flight=1)) is None
    assert policy(None, View(queue_length=0, in_flight=2)) is None
    assert policy(None, View(queue_length=2, in_flight=0)) is None


@pytest.mark.parametrize(("queued", "in_flight"), [(3, 0), (0, 3), (2, 1), (5, 5)])
def test_credits_refuse_at_the_limit(queued: int, in_flight: int) -> None:
    """With every credit held, events are refused as "no credit"."""
    refusal = aseda.Credits(3)(None, View(queue_length=queued, in_flight=in_flight))
    assert aseda.Refusal("no credit") == refusal


def test_credits_available() -> None:
    """available() is the credits not held by a queued or in-flight event."""
    policy = aseda.Credits(5)
    assert policy.available(View()) == 5
    assert policy.available(View(queue_length=2, in_flight=1)) == 2
    assert policy.available(View(queue_length=3, in_flight=2)) == 0


def test_credits_admit_many() -> None:
    """A batch needs one credit per event."""
    policy = aseda.Credits(4)
    assert policy.admit_many([1, 2, 3], View(in_flight=1)) is None
    assert aseda.Refusal("no credit") == policy.admit_many([1, 2, 3, 4], View(in_flight=1))


def test_credits_repr() -> None:
    """The repr shows the credits."""
    assert repr(aseda.Credits(7)) == "Credits(7)"


@pytest.mark.parametrize("credits", BAD_WHOLE)
def test_credits_bad_input(credits: Any) -> None:
    """credits must be a positive whole number."""
    with pytest.raises(aseda.ConfigError, match="Credits"):
        aseda.Credits(credits)


# PerClass --------------------------------------------------------------------------------


def by_key(event: Any) -> Any:
    return event["cls"]


def test_per_class_each_class_has_its_own_policy() -> None:
    """Exhausting class A's bucket leaves class B's untouched."""
    clock = Clock()
    policy = aseda.PerClass(
        {
            "a": aseda.TokenBucket(1, burst=2, clock=clock),
            "b": aseda.TokenBucket(1, burst=2, clock=clock),
        },
        by_key,
    )
    a, b, view = {"cls": "a"}, {"cls": "b"}, View()
    assert [policy(a, view), policy(a, view)] == [None, None]
    refusal = policy(a, view)
    assert refusal is not None
    assert refusal.reason == "rate limited"
    assert [policy(b, view), policy(b, view)] == [None, None]
    assert policy(b, view) is not None
    clock.advance(1)
    assert [policy(a, view), policy(b, view)] == [None, None]


def test_per_class_lower_classes_refused_first() -> None:
    """With 3 classes and capacity 30, classes 0, 1, 2 are refused from 10, 20, 30 queued."""
    policy = aseda.PerClass({0: None, 1: None, 2: None}, lambda e: e)

    def first_refused(cls: int) -> int:
        return next(q for q in range(100) if policy(cls, View(queue_length=q, capacity=30)))

    assert [first_refused(c) for c in (0, 1, 2)] == [10, 20, 30]
    refusal = policy(0, View(queue_length=10, capacity=30))
    assert aseda.Refusal("class 0 over its share") == refusal


def test_per_class_order_sets_priority() -> None:
    """order= lists classes from lowest to highest, overriding sorted order."""
    policy = aseda.PerClass({"a": None, "b": None}, lambda e: e, order=["b", "a"])
    view = View(queue_length=5, capacity=10)
    assert aseda.Refusal("class 'b' over its share") == policy("b", view)
    assert policy("a", view) is None
    assert policy.order == ("b", "a")


def test_per_class_custom_shares() -> None:
    """shares= sets the fraction of the capacity each class may fill."""
    policy = aseda.PerClass(
        {"low": None, "high": None},
        lambda e: e,
        order=["low", "high"],
        shares={"low": 0.25, "high": 0.5},
    )
    assert policy("low", View(queue_length=2, capacity=10)) is None
    assert policy("low", View(queue_length=3, capacity=10)) is not None
    assert policy("high", View(queue_length=4, capacity=10)) is None
    assert policy("high", View(queue_length=5, capacity=10)) is not None


def test_per_class_partial_shares_default_to_the_whole_queue() -> None:
    """A class left out of shares= may fill the whole queue."""
    policy = aseda.PerClass({"low": None, "high": None}, lambda e: e, shares={"low": 0.5})
    assert policy.shares == {"high": 1.0, "low": 0.5}
    assert policy("high", View(queue_length=9, capacity=10)) is None


def test_per_class_unbounded_queue_never_refuses_on_share() -> None:
    """With an unbounded queue, shares never refuse."""
    policy = aseda.PerClass({0: None, 1: None}, lambda e: e)
    assert policy(0, View(queue_length=10**9, capacity=math.inf)) is None


def test_per_class_share_decides_before_policy() -> None:
    """The share is checked first (no side effects); then the class's own policy, whose
    return value is normalised."""
    policy = aseda.PerClass({"a": lambda e, s: "busy", "b": lambda e, s: False}, lambda e: e)
    assert aseda.Refusal("class 'a' over its share") == policy(
        "a", View(queue_length=10**6, capacity=1)
    )
    assert aseda.Refusal("busy") == policy("a", View())
    assert aseda.Refusal("refused by policy") == policy("b", View())


def test_per_class_accepting_policy_then_share() -> None:
    """A class policy returning True still leaves the share check."""
    policy = aseda.PerClass({"a": lambda e, s: True, "b": None}, lambda e: e)
    assert policy("a", View(queue_length=4, capacity=10)) is None
    assert policy("a", View(queue_length=5, capacity=10)) is not None


@pytest.mark.parametrize("cls", ["z", None, ["unhashable"]])
def test_per_class_unknown_class_is_refused(cls: Any) -> None:
    """An event of an unknown (or unhashable) class is refused, naming the class; no raise."""
    policy = aseda.PerClass({"a": None}, lambda e: e)
    refusal = policy(cls, View())
    assert refusal is not None
    assert f"unknown class {cls!r}" == refusal.reason


def test_per_class_classify_error_propagates() -> None:
    """A failing classify raises out of the policy (the runtime refuses it as a policy error)."""

    def classify(event: Any) -> Any:
        raise LookupError("no class")

    policy = aseda.PerClass({"a": None}, classify)
    with pytest.raises(LookupError, match="no class"):
        policy("x", View())


def test_per_class_admit_many_counts_the_batch() -> None:
    """A batch's earlier events count against the class share."""
    policy = aseda.PerClass({"low": None, "high": None}, lambda e: e, order=["low", "high"])
    view = View(capacity=10)
    assert policy.admit_many(["low"] * 5, view) is None
    assert policy.admit_many(["low"] * 6, view) is not None
    assert policy.admit_many(["low"] * 4 + ["high"] * 6, view) is None


def test_per_class_refused_batch_takes_no_tokens() -> None:
    """A refused batch leaves the class buckets as they were (all or none)."""
    clock = Clock()
    bucket = aseda.TokenBucket(1, burst=2, clock=clock)
    policy = aseda.PerClass({"a": bucket}, lambda e: e)
    refusal = policy.admit_many(["a", "a", "a"], View())
    assert refusal is not None
    assert bucket.tokens == 2.0


def test_per_class_default_share_is_exact() -> None:
    """Class i of n is refused from exactly capacity * (i + 1) / n queued events."""
    policy = aseda.PerClass({c: None for c in range(11)}, lambda e: e)
    assert policy(8, View(queue_length=63, capacity=77)) is not None


def test_per_class_keeps_its_arguments() -> None:
    """The mapping is copied; order and shares are exposed."""
    mapping: dict[Any, Any] = {"a": None, "b": None}
    policy = aseda.PerClass(mapping, lambda e: e)
    mapping["c"] = None
    assert policy.policies == {"a": None, "b": None}
    assert policy.order == ("a", "b")
    assert policy.shares == {"a": 0.5, "b": 1.0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policies": {}}, "at least one class"),
        ({"classify": "cls"}, "classify must be callable"),
        ({"policies": {"a": 3}}, "not callable"),
        ({"order": ["a"]}, "each class once"),
        ({"order": ["a", "b", "c"]}, "each class once"),
        ({"order": ["a", "a"]}, "each class once"),
        ({"order": ["a", "a", "b"]}, "each class once"),
        ({"shares": {"a": 0}}, "share of class 'a'"),
        ({"shares": {"a": -0.5}}, "share of class 'a'"),
        ({"shares": {"a": 1.5}}, "share of class 'a'"),
        ({"shares": {"a": math.nan}}, "share of class 'a'"),
        ({"shares": {"a": True}}, "share of class 'a'"),
        ({"shares": {"a": "0.5"}}, "share of class 'a'"),
        ({"shares": {"z": 0.5}}, "unknown classes"),
        ({"policies": {1: None, "a": None}}, "cannot be sorted"),
    ],
)
def test_per_class_bad_input(kwargs: dict[str, Any], message: str) -> None:
    """Every invalid argument raises ConfigError at construction."""
    args: dict[str, Any] = {"policies": {"a": None, "b": None}, "classify": lambda e: e}
    args.update(kwargs)
    with pytest.raises(aseda.ConfigError, match=message):
        aseda.PerClass(**args)


def test_per_class_unsortable_classes_with_order() -> None:
    """Classes that cannot be sorted are fine once order= is given."""
    policy = aseda.PerClass({1: None, "a": None}, lambda e: e, order=["a", 1])
    assert policy.order == ("a", 1)


# QueueDeadline (CoDel) -----------------------------------------------------------------


TARGET, INTERVAL = 0.005, 0.1


def overload(deadline: aseda.QueueDeadline, start: float = 0.0) -> float:
    """Run one interval whose shortest wait exceeds target; return when the next begins."""
    deadline.shed(0.02, start)
    deadline.shed(0.03, start + INTERVAL / 2)
    return start + INTERVAL


def test_deadline_not_overloaded_in_first_interval() -> None:
    """During the first interval nothing is shed, however long events waited."""
    deadline = aseda.QueueDeadline(TARGET, INTERVAL)
    assert [deadline.shed(1.0, now) for now in (0.0, 0.05, INTERVAL * 0.99)] == [
        False,
        False,
        False,
    ]
    assert deadline.overloaded is False


def test_deadline_burst_that_drains_is_served() -> None:
    """An interval whose minimum wait is within target is not overloaded, long waits or not."""
    deadline = aseda.QueueDeadline(TARGET, INTERVAL)
    deadline.shed(0.5, 0.0)
    deadline.shed(0.001, 0.05)
    deadline.shed(0.5, 0.06)
    assert deadline.shed(0.5, INTERVAL) is False
    assert deadline.overloaded is False


def test_deadline_minimum_equal_to_target_is_not_overloaded() -> None:
    """A minimum wait of exactly target is still acceptable."""
    deadline = aseda.QueueDeadline(TARGET, INTERVAL)
    deadline.shed(TARGET, 0.0)
    deadline.shed(1.0, 0.05)
    assert deadline.shed(1.0, INTERVAL) is False


def test_deadline_overloaded_sheds_only_long_waits() -> None:
    """Overloaded, events that waited more than 2 * target are shed, the others served."""
    deadline = aseda.QueueDeadline(TARGET, INTERVAL)
    now = overload(deadline)
    assert deadline.shed(0.011, now) is True
    assert deadline.overloaded is True
    assert deadline.shed(0.009, now + 0.01) is False
    assert deadline.shed(2 * TARGET, now + 0.02) is False
    assert deadline.shed(1.0, now + 0.03) is True


def test_deadline_recovers() -> None:
    """An interval whose minimum falls within target ends the overload."""
    deadline = aseda.QueueDeadline(TARGET, INTERVAL)
    now = overload(deadline)
    assert deadline.shed(0.02, now) is True
    assert deadline.shed(0.001, now + 0.05) is False
    assert deadline.shed(0.02, now + INTERVAL) is False
    assert deadline.overloaded is False


def test_deadline_stays_overloaded_while_the_queue_stands() -> None:
    """Interval after interval of long minimum waits keeps shedding."""
    deadline = aseda.QueueDeadline(TARGET, INTERVAL)
    now = overload(deadline)
    for _ in range(5):
        now = overload(deadline, now)
        assert deadline.overloaded is True
    assert deadline.shed(0.02, now) is True


def test_deadline_shed_events_count_toward_the_minimum() -> None:
    """Waits of shed events still count: an interval of only long waits stays overloaded."""
    deadline = aseda.QueueDeadline(TARGET, INTERVAL)
    now = overload(deadline)
    assert deadline.shed(0.5, now) is True
    assert deadline.shed(0.5, now + INTERVAL) is True


def test_deadline_idle_queue_forgets_old_overload() -> None:
    """After the queue sat empty for many intervals, a new burst is served in full."""
    deadline = aseda.QueueDeadline(TARGET, INTERVAL)
    overload(deadline)  # the queue stood, then drained; nothing arrives for 10 s
    deadline.emptied()
    idle = 10.0
    assert deadline.shed(0.0, idle) is False  # found the queue empty: served at once
    assert [deadline.shed(0.02 * k, idle + 0.02 * k) for k in (1, 2, 3)] == [False, False, False]


def test_deadline_defaults_and_clock() -> None:
    """CoDel's defaults (5 ms, 100 ms) and the injected clock are kept."""
    clock = Clock(3.0)
    deadline = aseda.QueueDeadline(clock=clock)
    assert (0.005, 0.1, clock) == (deadline.target, deadline.interval, deadline.clock)
    assert repr(deadline) == "QueueDeadline(target=0.005, interval=0.1)"


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.floats(0, 0.05), st.floats(0, 0.05)),
        max_size=100,
    )
)
def test_deadline_never_sheds_short_waits(events: list[tuple[float, float]]) -> None:
    """Whatever happens, nothing is shed in the first interval or after waiting <= 2 * target."""
    deadline = aseda.QueueDeadline(TARGET, INTERVAL)
    now = 0.0
    for advance, waited in events:
        now += advance
        shed = deadline.shed(waited, now)
        if shed:
            assert now >= INTERVAL
            assert waited > 2 * TARGET


@pytest.mark.parametrize("value", BAD_POSITIVE)
@pytest.mark.parametrize("which", ["target", "interval"])
def test_deadline_bad_input(which: str, value: Any) -> None:
    """target and interval must be finite numbers > 0."""
    with pytest.raises(aseda.ConfigError, match=f"QueueDeadline {which}"):
        aseda.QueueDeadline(**{which: value})


# Refusal modes and service order -----------------------------------------------------------


def test_refusal_modes_valid() -> None:
    """Valid Degrade, Redirect and AdaptiveLIFO keep their arguments."""
    assert ident is aseda.Degrade(ident).handler
    assert aseda.Redirect("fallback").stage == "fallback"
    assert (aseda.AdaptiveLIFO().threshold, aseda.AdaptiveLIFO(1).threshold) == (32, 1)


@pytest.mark.parametrize("handler", [None, 3, "handler"])
def test_degrade_needs_a_callable(handler: Any) -> None:
    """Degrade refuses a handler that cannot be called."""
    with pytest.raises(aseda.ConfigError, match="Degrade"):
        aseda.Degrade(handler)


@pytest.mark.parametrize("name", ["", None, 3])
def test_redirect_needs_a_stage_name(name: Any) -> None:
    """Redirect refuses an empty or non-string stage name."""
    with pytest.raises(aseda.ConfigError, match="Redirect"):
        aseda.Redirect(name)


@pytest.mark.parametrize("threshold", [0, -1, True, 1.5, 2.0, "4", None])
def test_adaptive_lifo_bad_threshold(threshold: Any) -> None:
    """AdaptiveLIFO's threshold must be an int >= 1."""
    with pytest.raises(aseda.ConfigError, match="AdaptiveLIFO"):
        aseda.AdaptiveLIFO(threshold)


# Stage options -------------------------------------------------------------------------


def test_stage_load_conditioning_options() -> None:
    """Valid admission, on_refuse, overflow, order and deadline land on the Stage."""
    policy = aseda.Threshold(5)
    deadline = aseda.QueueDeadline()
    s = aseda.stage(
        ident,
        admission=policy,
        on_refuse=aseda.Redirect("other"),
        overflow="drop_oldest",
        order=aseda.AdaptiveLIFO(4),
        deadline=deadline,
    )
    assert (policy, aseda.Redirect("other"), "drop_oldest", aseda.AdaptiveLIFO(4), deadline) == (
        s.admission,
        s.on_refuse,
        s.overflow,
        s.order,
        s.deadline,
    )


def test_stage_plain_callable_admission() -> None:
    """A plain function works as an admission policy."""

    def policy(event: Any, stage: aseda.StageView) -> bool:
        return True

    assert policy is aseda.stage(ident, admission=policy).admission


def test_stage_order_strings() -> None:
    """order="adaptive_lifo" becomes AdaptiveLIFO(); "fifo" means no reordering."""
    assert aseda.AdaptiveLIFO() == aseda.stage(ident, order="adaptive_lifo").order
    assert aseda.stage(ident, order="fifo").order is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"admission": 3}, "admission must be"),
        ({"admission": "threshold"}, "admission must be"),
        ({"on_refuse": "drop"}, "on_refuse"),
        ({"on_refuse": None}, "on_refuse"),
        ({"on_refuse": aseda.Degrade}, "on_refuse"),
        ({"on_refuse": "fallback"}, "on_refuse"),
        ({"overflow": "drop_newest"}, "overflow"),
        ({"overflow": None}, "overflow"),
        ({"order": "lifo"}, "order"),
        ({"order": None}, "order"),
        ({"order": aseda.AdaptiveLIFO}, "order"),
        ({"deadline": 0.1}, "deadline"),
        ({"deadline": aseda.QueueDeadline}, "deadline"),
        ({"deadline": aseda.Threshold(3)}, "deadline"),
    ],
)
def test_stage_bad_load_conditioning(options: dict[str, Any], message: str) -> None:
    """Every invalid load-conditioning option raises ConfigError at declaration."""
    with pytest.raises(aseda.ConfigError, match=message):
        aseda.stage(ident, **options)
