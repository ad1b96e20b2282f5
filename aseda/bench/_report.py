"""What a run measured: every request (:class:`Samples`) and its summary (:class:`Report`).

Time is in seconds from the start of the run (its origin). A window ``[start, end)`` of a run
summarises (see :class:`Window`):

* by *intended* send time: the requests offered in the window, and what became of them
  (refused, failed, unfinished) and the generator's lag;
* by *completion* time: the requests served in the window (the throughput) and their
  latencies, always measured from the intended send time.

Every percentile comes from :class:`aseda.LatencySummary` histograms (within ~1.6 %).
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._histogram import LatencyHistogram, LatencySummary
from ._targets import Outcome

__all__ = ["Report", "Sample", "Samples", "Window", "jain_index", "table"]

Mode = Literal["open", "closed"]

#: The percentiles a report keeps for its latency CDF.
CDF_PERCENTILES: tuple[float, ...] = (
    *(float(q) for q in range(1, 100)),
    99.5,
    99.9,
    99.99,
    100.0,
)

_NAN = math.nan


def jain_index(values: Iterable[float]) -> float:
    """Jain's fairness index of ``values``: ``(sum x)**2 / (n * sum x**2)``.

    1.0 when every value is equal; ``1/n`` when one of ``n`` gets everything. Usually taken
    over per-client throughputs (the SEDA papers' Haboob figures).

    Returns:
        The index, in ``[1/n, 1]``; ``nan`` for no values or when every value is zero.

    Raises:
        ValueError: a negative or non-finite value.
    """
    xs = [float(x) for x in values]
    for x in xs:
        if not (math.isfinite(x) and x >= 0):
            raise ValueError(f"jain_index() takes finite values >= 0, not {x!r}")
    squares = sum(x * x for x in xs)
    if not xs or squares == 0:
        return _NAN
    return min(1.0, sum(xs) ** 2 / (len(xs) * squares))


# Requests ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """One request: who sent it, when it was meant to go, when it went and how it ended.

    Times are seconds from the run's origin; ``nan`` until they happen.
    """

    #: the client that sent it (open loop: the request's index modulo the clients)
    client: int
    #: its number (open loop: its index in the run; closed loop: its client's count)
    seq: int
    #: when it was scheduled to go: the open-loop schedule, or when a closed-loop client sent it
    intended: float
    #: when its task actually started
    started: float = _NAN
    #: when the target returned or raised
    finished: float = _NAN
    #: how it ended; None while in flight or if the run cancelled it (unfinished)
    outcome: Outcome | None = None
    #: the refusal's reason, the error's type, or the target's own detail
    detail: str = ""

    @property
    def latency(self) -> float:
        """Seconds from the intended send time to the answer (``nan`` if unfinished)."""
        return self.finished - self.intended

    @property
    def lag(self) -> float:
        """Seconds the request started after its intended time: the generator's lag."""
        return self.started - self.intended


class _Acc:
    """Counts of one window, filled in one pass over the samples."""

    __slots__ = ("errors", "lag", "latency", "ok", "refused", "requests", "sent", "unfinished")

    def __init__(self) -> None:
        self.requests = self.sent = self.ok = self.refused = self.errors = self.unfinished = 0
        self.latency = LatencyHistogram()
        self.lag = LatencyHistogram()

    def window(self, name: str, start: float, end: float, open_loop: bool) -> Window:
        empty = LatencyHistogram().summary()
        return Window(
            name=name,
            start=float(start),
            end=float(end),
            requests=self.requests,
            sent=self.sent,
            ok=self.ok,
            refused=self.refused,
            errors=self.errors,
            unfinished=self.unfinished,
            latency=self.latency.summary(),
            lag=self.lag.summary() if open_loop else empty,
        )


def _bin(edges: Sequence[float], t: float) -> int:
    """The index of the window ``[edges[i], edges[i+1])`` holding ``t``, or -1."""
    if not t >= edges[0]:  # also nan
        return -1
    i = bisect_right(edges, t) - 1
    return i if i < len(edges) - 1 else -1


def _accumulate(items: Iterable[Sample], edges: Sequence[float], open_loop: bool) -> list[_Acc]:
    accs = [_Acc() for _ in range(max(0, len(edges) - 1))]
    if not accs:
        return accs
    for s in items:
        i = _bin(edges, s.intended)
        if i >= 0:
            acc = accs[i]
            acc.requests += 1
            if s.outcome is None:
                acc.unfinished += 1
            elif s.outcome is Outcome.REFUSED:
                acc.refused += 1
            elif s.outcome is Outcome.ERROR:
                acc.errors += 1
            if open_loop and s.started == s.started:
                acc.lag.record(s.started - s.intended)
        i = _bin(edges, s.started)
        if i >= 0:
            accs[i].sent += 1
        if s.outcome is Outcome.OK:
            i = _bin(edges, s.finished)
            if i >= 0:
                accs[i].ok += 1
                accs[i].latency.record(s.finished - s.intended)
    return accs


class Samples:
    """Every request of one run, in intended order, and how to summarise them.

    Attributes:
        mode: ``"open"`` or ``"closed"``.
        clients: how many clients the run had (a client that sent nothing still counts for
            fairness).
        end: seconds from the origin to the end of the run (when arrivals stopped).
        origin: the ``time.perf_counter()`` reading of time 0 (to relate other timestamps).
        items: the requests.
    """

    def __init__(
        self,
        mode: Mode,
        clients: int,
        end: float,
        items: list[Sample] | None = None,
        origin: float = 0.0,
    ) -> None:
        self.mode: Mode = mode
        self.clients = clients
        self.end = end
        self.items: list[Sample] = items if items is not None else []
        self.origin = origin

    def __len__(self) -> int:
        return len(self.items)

    def window(self, start: float, end: float, name: str = "") -> Window:
        """Summarise the window ``[start, end)`` (seconds from the origin)."""
        return _accumulate(self.items, (start, end), self.mode == "open")[0].window(
            name, start, end, self.mode == "open"
        )

    def report(
        self,
        *,
        name: str = "",
        warmup: float = 0.0,
        interval: float = 1.0,
        phases: Sequence[tuple[str, float, float]] = (),
        params: Mapping[str, Any] | None = None,
    ) -> Report:
        """Summarise the run: the window after ``warmup``, per interval and per phase.

        Args:
            name: the report's label.
            warmup: seconds at the start left out of the main window (not of the timeline).
            interval: seconds per row of the timeline, which covers the whole run.
            phases: named windows ``(name, start, end)`` to summarise too.
            params: what the run was asked to do, kept in the report as is.

        Raises:
            ValueError: ``interval`` is not > 0 or ``warmup`` is not in ``[0, end)``.
        """
        if not interval > 0:
            raise ValueError(f"interval must be > 0, not {interval!r}")
        if not (warmup == 0 or 0 < warmup < self.end):
            raise ValueError(f"warmup must be in [0, {self.end:g}), not {warmup!r}")
        open_loop = self.mode == "open"
        acc = _accumulate(self.items, (warmup, self.end), open_loop)[0]
        main = acc.window("window", warmup, self.end, open_loop)
        edges = [k * interval for k in range(math.ceil(self.end / interval - 1e-9))]
        edges.append(self.end)
        rows = _accumulate(self.items, edges, open_loop) if self.end > 0 else []
        intervals = tuple(
            a.window(f"{lo:g}s", lo, hi, open_loop)
            for a, lo, hi in zip(rows, edges, edges[1:], strict=False)
        )
        windows = tuple(self.window(lo, hi, label) for label, lo, hi in phases)
        per_client = [0] * self.clients
        refusals: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        for s in self.items:
            if s.outcome is Outcome.OK and warmup <= s.finished < self.end:
                if 0 <= s.client < self.clients:
                    per_client[s.client] += 1
            elif warmup <= s.intended < self.end:
                if s.outcome is Outcome.REFUSED:
                    refusals[s.detail] += 1
                elif s.outcome is Outcome.ERROR:
                    errors[s.detail] += 1
        cdf = tuple((q, acc.latency.percentile(q)) for q in CDF_PERCENTILES) if acc.ok else ()
        return Report(
            name=name,
            mode=self.mode,
            clients=self.clients,
            warmup=float(warmup),
            end=float(self.end),
            window=main,
            intervals=intervals,
            phases=windows,
            client_ok=tuple(per_client),
            refusals=dict(sorted(refusals.items())),
            errors=dict(sorted(errors.items())),
            cdf=cdf,
            params=dict(params or {}),
            samples=self,
        )

    def to_list(self) -> list[list[Any]]:
        """The samples as JSON-ready rows ``[client, seq, intended, started, finished,
        outcome, detail]`` (``nan`` as None, an unfinished outcome as None)."""
        return [
            [
                s.client,
                s.seq,
                _clean(s.intended),
                _clean(s.started),
                _clean(s.finished),
                s.outcome.value if s.outcome is not None else None,
                s.detail,
            ]
            for s in self.items
        ]

    @classmethod
    def from_list(
        cls, mode: Mode, clients: int, end: float, rows: Iterable[Sequence[Any]]
    ) -> Samples:
        """Samples from the rows of :meth:`to_list`."""
        items = [
            Sample(
                client=int(r[0]),
                seq=int(r[1]),
                intended=_float(r[2]),
                started=_float(r[3]),
                finished=_float(r[4]),
                outcome=Outcome(r[5]) if r[5] is not None else None,
                detail=str(r[6]),
            )
            for r in rows
        ]
        return cls(mode, clients, end, items)


# Summaries -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Window:
    """A summary of the requests of one stretch ``[start, end)`` of a run.

    ``requests``, ``refused``, ``errors``, ``unfinished`` and ``lag`` are about the requests
    whose *intended* send time is in the window; ``ok`` and ``latency`` about those *served*
    (completed ok) in the window; ``sent`` about those whose task started in it. Windows are
    equal when their figures are (``nan`` equals ``nan`` here).
    """

    #: a label: "window", the interval's start ("3s"), or the phase's name
    name: str
    #: seconds from the origin
    start: float
    end: float
    #: requests intended in the window (offered)
    requests: int
    #: requests actually started in the window
    sent: int
    #: requests served (outcome ok) in the window
    ok: int
    #: of the window's requests: refused, failed, cancelled at the end of the run
    refused: int
    errors: int
    unfinished: int
    #: latency of the requests served in the window, from their intended send time
    latency: LatencySummary
    #: the generator's lag (start - intended) of the window's requests (open loop only)
    lag: LatencySummary

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Window):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def seconds(self) -> float:
        """The window's length."""
        return self.end - self.start

    def _rate(self, n: int) -> float:
        return n / self.seconds if self.seconds > 0 else _NAN

    @property
    def offered(self) -> float:
        """Requests intended per second."""
        return self._rate(self.requests)

    @property
    def sent_rate(self) -> float:
        """Requests started per second."""
        return self._rate(self.sent)

    @property
    def throughput(self) -> float:
        """Requests served per second."""
        return self._rate(self.ok)

    @property
    def refused_share(self) -> float:
        """The share of the window's requests that were refused (``nan`` if none)."""
        return self.refused / self.requests if self.requests else _NAN

    @property
    def error_share(self) -> float:
        """The share of the window's requests that failed (``nan`` if none)."""
        return self.errors / self.requests if self.requests else _NAN

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``nan`` and infinities as None), derived rates included."""
        data = {
            "name": self.name,
            "start": self.start,
            "end": self.end,
            "requests": self.requests,
            "sent": self.sent,
            "ok": self.ok,
            "refused": self.refused,
            "errors": self.errors,
            "unfinished": self.unfinished,
            "latency": asdict(self.latency),
            "lag": asdict(self.lag),
            "offered_per_s": self.offered,
            "throughput_per_s": self.throughput,
            "refused_share": self.refused_share,
            "error_share": self.error_share,
        }
        out: dict[str, Any] = _jsonable(data)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Window:
        """The window of :meth:`to_dict` (derived values are recomputed)."""
        return cls(
            name=str(data["name"]),
            start=_float(data["start"]),
            end=_float(data["end"]),
            requests=int(data["requests"]),
            sent=int(data["sent"]),
            ok=int(data["ok"]),
            refused=int(data["refused"]),
            errors=int(data["errors"]),
            unfinished=int(data["unfinished"]),
            latency=_summary(data["latency"]),
            lag=_summary(data["lag"]),
        )


@dataclass(frozen=True, eq=False)
class Report:
    """The summary of one run: made by :func:`open_loop`, :func:`closed_loop` or
    :meth:`Samples.report`.

    Write it with :meth:`to_text` (a console table), :meth:`to_json` / :meth:`write_json`,
    and :meth:`write_png` (plots, needs matplotlib); read it back with :meth:`from_json`.
    Reports are equal when their JSON is (the samples are not compared).
    """

    #: the run's label
    name: str
    #: ``"open"`` or ``"closed"`` loop
    mode: Mode
    #: clients of the run
    clients: int
    #: seconds left out at the start of the main window
    warmup: float
    #: seconds from the origin to the end of the run (when arrivals stopped)
    end: float
    #: the main window, ``[warmup, end)``
    window: Window
    #: the timeline: consecutive windows over the whole run
    intervals: tuple[Window, ...] = ()
    #: named windows: each span in which a phase of the load is in force, in time order
    phases: tuple[Window, ...] = ()
    #: requests served per client in the main window
    client_ok: tuple[int, ...] = ()
    #: refused requests of the main window by reason
    refusals: dict[str, int] = field(default_factory=dict)
    #: failed requests of the main window by error
    errors: dict[str, int] = field(default_factory=dict)
    #: ``(percentile, seconds)`` points of the main window's latency distribution
    cdf: tuple[tuple[float, float], ...] = ()
    #: what the run was asked to do
    params: dict[str, Any] = field(default_factory=dict)
    #: every request, when the report was made from them (not compared)
    samples: Samples | None = field(default=None, repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Report):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json(indent=None))

    # The main window's figures, for short.

    @property
    def throughput(self) -> float:
        """Requests served per second in the main window."""
        return self.window.throughput

    @property
    def offered(self) -> float:
        """Requests intended per second in the main window."""
        return self.window.offered

    @property
    def latency(self) -> LatencySummary:
        """Latency of the requests served in the main window, from their intended time."""
        return self.window.latency

    @property
    def refused_share(self) -> float:
        """The share of the main window's requests refused."""
        return self.window.refused_share

    @property
    def error_share(self) -> float:
        """The share of the main window's requests that failed."""
        return self.window.error_share

    @property
    def client_throughput(self) -> tuple[float, ...]:
        """Requests served per second per client, in the main window."""
        seconds = self.window.seconds
        return tuple(n / seconds if seconds > 0 else _NAN for n in self.client_ok)

    @property
    def fairness(self) -> float:
        """Jain's fairness index over the clients' throughputs (``nan`` if none served)."""
        return jain_index(self.client_ok) if self.client_ok else _NAN

    # Output.

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """A JSON-ready dict; with ``samples`` every request too (when the report has them)."""
        data: dict[str, Any] = {
            "name": self.name,
            "mode": self.mode,
            "clients": self.clients,
            "warmup": self.warmup,
            "end": self.end,
            "throughput_per_s": self.throughput,
            "offered_per_s": self.offered,
            "refused_share": self.refused_share,
            "error_share": self.error_share,
            "fairness": self.fairness,
            "window": self.window.to_dict(),
            "intervals": [w.to_dict() for w in self.intervals],
            "phases": [w.to_dict() for w in self.phases],
            "client_ok": list(self.client_ok),
            "refusals": dict(self.refusals),
            "errors": dict(self.errors),
            "cdf": [list(p) for p in self.cdf],
            "params": self.params,
        }
        out: dict[str, Any] = _jsonable(data)
        if samples and self.samples is not None:
            out["samples"] = self.samples.to_list()
        return out

    def to_json(self, *, samples: bool = False, indent: int | None = 2) -> str:
        """The report as JSON (``nan``, infinity: null); with ``samples`` every request too."""
        return json.dumps(self.to_dict(samples=samples), indent=indent)

    def write_json(self, path: str | Path, *, samples: bool = False) -> Path:
        """Write :meth:`to_json` to ``path`` (creating its folder); return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(samples=samples) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """The report of :meth:`to_dict`."""
        mode: Mode = "open" if data["mode"] == "open" else "closed"
        end = _float(data["end"])
        samples = None
        if data.get("samples") is not None:
            samples = Samples.from_list(mode, int(data["clients"]), end, data["samples"])
        return cls(
            name=str(data["name"]),
            mode=mode,
            clients=int(data["clients"]),
            warmup=_float(data["warmup"]),
            end=end,
            window=Window.from_dict(data["window"]),
            intervals=tuple(Window.from_dict(w) for w in data["intervals"]),
            phases=tuple(Window.from_dict(w) for w in data["phases"]),
            client_ok=tuple(int(n) for n in data["client_ok"]),
            refusals={str(k): int(v) for k, v in data["refusals"].items()},
            errors={str(k): int(v) for k, v in data["errors"].items()},
            cdf=tuple((_float(q), _float(v)) for q, v in data["cdf"]),
            params=dict(data["params"]),
            samples=samples,
        )

    @classmethod
    def from_json(cls, text: str) -> Report:
        """The report of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def read_json(cls, path: str | Path) -> Report:
        """The report of :meth:`write_json`."""
        return cls.from_json(Path(path).read_text())

    def to_text(self, *, timeline: bool = True) -> str:
        """The report as a console table: the main window, then the timeline and phases."""
        kind = "open loop" if self.mode == "open" else "closed loop"
        lines = [
            f"{self.name or kind} ({kind}, {self.clients} client{'s' * (self.clients != 1)}; "
            f"window {self.window.start:g}-{self.window.end:g} s"
            + (f" after {self.warmup:g} s warm-up)" if self.warmup else ")"),
            table([self]),
        ]
        if self.mode == "open" and self.window.lag.count:
            lag = self.window.lag
            lines.append(
                f"generator lag: p50 {_ms(lag.p50)} ms, p99 {_ms(lag.p99)} ms, "
                f"max {_ms(lag.max)} ms"
            )
        if self.refusals:
            lines.append("refused: " + ", ".join(f"{k} {v}" for k, v in self.refusals.items()))
        if self.errors:
            lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in self.errors.items()))
        if self.phases:
            lines += ["", "phases:", _windows_table(self.phases)]
        if timeline and self.intervals:
            lines += ["", "timeline:", _windows_table(self.intervals)]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def write_png(self, path: str | Path, *, title: str | None = None) -> Path:
        """Plot the latency CDF, throughput and p90 over time to a PNG (needs matplotlib)."""
        from ._plot import plot

        return plot([self], path, title=title)


# Text ----------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    value = seconds * 1e3
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _share(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.1%}"


def _rate(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def table(reports: Sequence[Report]) -> str:
    """One line per report: offered and served per second, latency ms, refused, errors,
    fairness and the generator's p99 lag."""
    width = max([6, *(len(r.name) for r in reports)])
    header = (
        f"{'run':<{width}} {'offered/s':>9} {'served/s':>9} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'refused':>8} {'errors':>7} {'fairness':>8} "
        f"{'lag p99':>7}"
    )
    lines = [header]
    for r in reports:
        w, lat = r.window, r.latency
        lag = _ms(w.lag.p99) if r.mode == "open" else "-"
        fair = "-" if math.isnan(r.fairness) else f"{r.fairness:.3f}"
        lines.append(
            f"{r.name:<{width}} {_rate(w.offered):>9} {_rate(w.throughput):>9} "
            f"{_ms(lat.p50):>7} {_ms(lat.p90):>7} {_ms(lat.p99):>7} "
            f"{_ms(lat.max) if lat.count else '-':>7} {_share(w.refused_share):>8} "
            f"{_share(w.error_share):>7} {fair:>8} {lag:>7}"
        )
    return "\n".join(lines)


def _windows_table(windows: Sequence[Window]) -> str:
    width = max([6, *(len(w.name) for w in windows)])
    lines = [
        f"{'window':<{width}} {'from s':>7} {'to s':>7} {'offered/s':>9} {'served/s':>9} "
        f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'refused':>8} {'errors':>7}"
    ]
    for w in windows:
        lines.append(
            f"{w.name:<{width}} {w.start:>7.2f} {w.end:>7.2f} {_rate(w.offered):>9} "
            f"{_rate(w.throughput):>9} {_ms(w.latency.p50):>7} {_ms(w.latency.p90):>7} "
            f"{_ms(w.latency.p99):>7} {_share(w.refused_share):>8} {_share(w.error_share):>7}"
        )
    return "\n".join(lines)


# JSON helpers --------------------------------------------------------------------------------


def _clean(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _float(value: Any) -> float:
    return _NAN if value is None else float(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no nan or infinity
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _summary(data: Mapping[str, Any]) -> LatencySummary:
    return LatencySummary(
        count=int(data["count"]),
        p50=_float(data["p50"]),
        p90=_float(data["p90"]),
        p99=_float(data["p99"]),
        max=_float(data["max"]),
        mean=_float(data["mean"]),
    )
