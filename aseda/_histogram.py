"""A compact log-bucketed latency histogram (HdrHistogram's layout, in pure Python).

Values are recorded in nanoseconds into buckets that keep ``SUB_BITS`` bits of precision:
every bucket spans at most 1/2**SUB_BITS of its lower bound (about 3 % with 5 bits), at any
magnitude from a nanosecond to hours, in a few hundred counters. Recording is an integer
``bit_length`` and a list increment. Percentiles are read from the cumulative counts and
reported as the bucket's midpoint, so a reported percentile is within half a bucket (1.6 %)
of an exact one computed from the same samples; the maximum is kept exactly.

Pure: no clock, no event loop. The runtime records samples; controllers and reports read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["LatencyHistogram", "LatencySummary"]

SUB_BITS = 5
_SUB = 1 << SUB_BITS  # sub-buckets per power of two


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of a latency distribution, in seconds (``nan`` when there are no samples)."""

    #: samples recorded
    count: int
    #: the median
    p50: float
    #: the 90th percentile (SEDA's response-time target)
    p90: float
    #: the 99th percentile
    p99: float
    #: the largest sample, exactly
    max: float
    #: the mean, exactly
    mean: float


def _index(ns: int) -> int:
    if ns < _SUB:
        return ns
    shift = ns.bit_length() - SUB_BITS - 1
    return ((shift + 1) << SUB_BITS) + ((ns >> shift) - _SUB)


def _midpoint(index: int) -> float:
    """The value (ns) a bucket stands for: the middle of its range."""
    if index < _SUB:
        return float(index)
    shift = (index >> SUB_BITS) - 1
    low = ((index & (_SUB - 1)) + _SUB) << shift
    return low + ((1 << shift) - 1) / 2


class LatencyHistogram:
    """Counts latencies in log-spaced buckets; percentiles within ~1.6 %.

    Not thread-safe; the runtime records from the event loop thread only.
    """

    __slots__ = ("_counts", "_max", "_sum", "count")

    def __init__(self) -> None:
        # Sparse: latencies fill a few dozen of the ~2000 possible buckets, and every stage
        # keeps several histograms, so a dict is far smaller than a list of every bucket.
        self._counts: dict[int, int] = {}
        self.count = 0
        self._sum = 0
        self._max = 0

    def record(self, seconds: float) -> None:
        """Add one sample (negative values count as zero)."""
        ns = int(seconds * 1e9) if seconds > 0 else 0
        index = _index(ns)
        counts = self._counts
        counts[index] = counts.get(index, 0) + 1
        self.count += 1
        self._sum += ns
        if ns > self._max:
            self._max = ns

    def record_many(self, samples: Iterable[float]) -> None:
        for sample in samples:
            self.record(sample)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0 < q <= 100) in seconds; ``nan`` if empty."""
        if not 0 < q <= 100:
            raise ValueError(f"percentile must be in (0, 100], not {q!r}")
        if not self.count:
            return float("nan")
        # The smallest value with at least q % of the samples at or below it.
        rank = max(1, -(-self.count * q // 100))
        if rank >= self.count:
            return self._max / 1e9
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            if seen >= rank:
                return min(_midpoint(index), self._max) / 1e9
        return self._max / 1e9  # pragma: no cover - rank <= count

    @property
    def max(self) -> float:
        """The largest sample in seconds (0 if empty)."""
        return self._max / 1e9

    @property
    def mean(self) -> float:
        """The mean in seconds; ``nan`` if empty."""
        return self._sum / self.count / 1e9 if self.count else float("nan")

    def summary(self) -> LatencySummary:
        """Median, 90th, 99th percentile, max and mean in one pass-friendly record."""
        if not self.count:
            nan = float("nan")
            return LatencySummary(0, nan, nan, nan, 0.0, nan)
        return LatencySummary(
            count=self.count,
            p50=self.percentile(50),
            p90=self.percentile(90),
            p99=self.percentile(99),
            max=self.max,
            mean=self.mean,
        )

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram's samples to this one."""
        counts = self._counts
        for index, n in other._counts.items():
            counts[index] = counts.get(index, 0) + n
        self.count += other.count
        self._sum += other._sum
        self._max = max(self._max, other._max)

    def reset(self) -> None:
        """Forget every sample."""
        self._counts = {}
        self.count = 0
        self._sum = 0
        self._max = 0
