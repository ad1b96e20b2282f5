"""The latency histogram: percentiles within half a bucket of exact ones, whatever the data."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aseda._histogram import LatencyHistogram

#: Half a bucket, relative: 1 / 2**(SUB_BITS + 1), plus a nanosecond of truncation.
TOLERANCE = 1 / 64


def exact(samples: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(len(ordered) * q / 100) - 1)]


@settings(max_examples=200, deadline=None)
@given(
    samples=st.lists(
        st.floats(min_value=1e-6, max_value=100.0, allow_nan=False), min_size=1, max_size=300
    ),
    q=st.sampled_from([1, 10, 50, 90, 99, 99.9, 100]),
)
def test_percentiles_match_exact_ones(samples: list[float], q: float) -> None:
    """Every percentile is within 1/64 (relative) of the exact nearest-rank percentile."""
    h = LatencyHistogram()
    h.record_many(samples)
    want = exact(samples, q)
    assert abs(h.percentile(q) - want) <= want * TOLERANCE + 2e-9


@given(samples=st.lists(st.floats(min_value=0, max_value=1e4), min_size=1, max_size=100))
def test_count_max_mean_are_exact(samples: list[float]) -> None:
    """count and max are exact; the mean is exact to the nanosecond."""
    h = LatencyHistogram()
    h.record_many(samples)
    assert h.count == len(samples)
    assert h.max == pytest.approx(max(samples), abs=1e-9)
    assert h.mean == pytest.approx(sum(samples) / len(samples), abs=1e-9)


def test_empty() -> None:
    """An empty histogram reports nan percentiles and a zero count."""
    s = LatencyHistogram().summary()
    assert s.count == 0 and math.isnan(s.p50) and math.isnan(s.p99)


def test_merge_and_reset() -> None:
    """Merging adds samples; reset forgets them."""
    a, b = LatencyHistogram(), LatencyHistogram()
    a.record_many([0.001] * 90)
    b.record_many([1.0] * 10)
    a.merge(b)
    assert a.count == 100
    assert a.percentile(90) == pytest.approx(0.001, rel=TOLERANCE)
    assert a.percentile(91) == pytest.approx(1.0, rel=TOLERANCE)
    a.reset()
    assert a.count == 0


def test_negative_and_bad_percentiles() -> None:
    """A negative sample counts as zero; a percentile outside (0, 100] is an error."""
    h = LatencyHistogram()
    h.record(-1.0)
    assert h.max == 0.0
    with pytest.raises(ValueError, match="percentile"):
        h.percentile(0)
