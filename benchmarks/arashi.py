"""Arashi under overload: SEDA's e-mail service benchmark, re-run on examples/arashi (issue 7).

Run by hand from the repository root (it is a benchmark, not a test)::

    python -m benchmarks.arashi                      # every scenario, ~10 min
    python -m benchmarks.arashi --quick              # shorter runs, a smaller spike, ~2 min
    python -m benchmarks.arashi --only figure,spike  # some scenarios
    python -m benchmarks.arashi --duration 60 --target 0.5

Every run starts a fresh service, ``python -m examples.arashi --port 0 --users N --control C
--target T ...`` pinned to CPU 0 (``taskset -c 0``), waits for its ``listening on`` line (the
database is built before it), and drives it with ``python -m benchmarks.arashi_load`` pinned to
CPU 1: closed-loop users that log in, then think 20 ms and send one request of a read-dominated
mix (show, list, search, folders, delete, refile, login), choosing what to read from the links
of the pages they got; a refused user (503) waits for the ``Retry-After`` the service sent
(clamped to [0.1, 5] s; 1 s without one; times a random factor in [0.8, 1.2]) and retries the
same request. See
benchmarks/arashi_load.py for the mix and docs/arashi-benchmark.md for the method.

Scenarios (``--only``; names in brackets):

1. [figure] The Arashi figure: N users (128), target p90 T (1 s), ``--control none``, ``aimd``
   and ``usits`` (SEDA's controller, the reference): per request type the p90 of the answered
   requests and the share refused, and the totals. Target (aimd): every type's p90 <= T, and
   the total refused share within 5 points of the minimum for the offered load (below).
2. [spike] 3 users, then 1000, then 3 again (aimd; usits as reference): p90, admitted/s and
   refused/s over 0.5 s windows (requests counted where they end). Targets: p90 back under T
   within 0.5 s of the jump (only the first window may be over T; every later one while the
   spike lasts is under it, and one with nobody answered counts as over); the worst p90
   during the spike under 2 T.
3. [classes] Two classes of N users (even users class 0, "paying"; odd class 1, "free"), the
   service with ``--classes`` (and without, as reference): class 0 refused at most half as
   often as class 1.
4. [degrade] aimd with ``--degrade``: every type's p90 (degraded pages included) <= T, with
   fewer outright refusals (503) than aimd without it.
5. [alternatives] What users run instead: ``--control none`` and ``--control limit:L``, a fixed
   concurrency limit on each route (the service's routes, one per request type, each admit at
   most L requests at once, queued or served, and refuse the next: uvicorn's
   ``--limit-concurrency``, per route). L is sized by Little's law: K requests in the service
   at C requests/s are answered in K / C on average, so K = C x T / 2 leaves the p90 room under
   T; the busiest route (show, p_max = 36 % of the mix) gets its share, L = K x p_max.

The minimum refused share. With N closed-loop users that think Z between requests, a service
that serves at most C requests/s, answered requests taking at most R = T (the most the target
allows), and a refused request costing its user a cycle of B (its own answer time plus the
back-off; measured), a refused share f gives a served rate of (1 - f) N / ((1 - f)(Z + T) + f B),
which must not exceed C. The least f that satisfies it is::

    f_min = max(0, D / (D + C B))   with D = N - C (Z + T)

D is the number of users the service cannot keep busy-cycling within the target. When B equals
Z + T (a refused user comes back as late as a served one would) this is the familiar
``1 - C / X_T`` with X_T = N / (Z + T), the offered rate at the target response time; with the
1 s Retry-After the two nearly agree. C, the capacity, is the largest served rate measured in
any 128-user run of this invocation (none, aimd, usits, limit): the uncontrolled run is
saturated, so its served rate is what the service can do with this mix.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.arashi_load import MIX, TYPES

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SCENARIOS = ("figure", "spike", "classes", "degrade", "alternatives")
THINK = 0.020
WINDOW = 0.5  # seconds per window of the spike's timeline
SLACK = 0.05  # the refusal target: within 5 points of the minimum

# Sample fields, as written by benchmarks/arashi_load.py.
SENT, LATENCY, TYPE, STATUS, USER, DEGRADED, WAIT = range(7)

Sample = Sequence[float]


# --- arithmetic (pure) ----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank: the smallest value with at least q % of
    the values at or below it; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def offered_at_target(users: int, think: float, target: float) -> float:
    """X_T = N / (Z + T): the rate N closed-loop users offer when every answer takes T."""
    return users / (think + target)


def min_refused_share(
    users: int, think: float, target: float, capacity: float, refused_cycle: float
) -> float:
    """The least refused share that keeps the served rate within ``capacity`` while served
    requests take ``target``: max(0, D / (D + C B)) with D = N - C (Z + T) (module docstring).
    """
    excess = users - capacity * (think + target)
    if excess <= 0:
        return 0.0
    return excess / (excess + capacity * max(refused_cycle, 0.0))


def is_refused(s: Sample) -> bool:
    return s[STATUS] == 503


def is_served(s: Sample) -> bool:
    return 200 <= s[STATUS] < 400


@dataclass
class Stats:
    """What happened to a set of requests."""

    requests: int = 0
    served: int = 0
    refused: int = 0
    degraded: int = 0
    errors: int = 0
    seconds: float = 0.0
    p50: float = math.nan
    p90: float = math.nan
    p99: float = math.nan
    mean: float = math.nan
    refused_cycle: float = math.nan  # mean answer time + back-off of the refused requests

    @property
    def refused_share(self) -> float:
        return self.refused / self.requests if self.requests else math.nan

    @property
    def degraded_share(self) -> float:
        return self.degraded / self.requests if self.requests else math.nan

    @property
    def served_rate(self) -> float:
        return self.served / self.seconds if self.seconds else math.nan

    @property
    def offered_rate(self) -> float:
        return self.requests / self.seconds if self.seconds else math.nan

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            refused_share=self.refused_share,
            degraded_share=self.degraded_share,
            served_rate=self.served_rate,
            offered_rate=self.offered_rate,
        )
        return {k: _clean(v) for k, v in data.items()}


def stats(samples: Iterable[Sample], seconds: float) -> Stats:
    """Counts, latency percentiles of the served requests, and the refused requests' cycle."""
    out = Stats(seconds=seconds)
    latencies: list[float] = []
    cycles: list[float] = []
    for s in samples:
        out.requests += 1
        if is_refused(s):
            out.refused += 1
            cycles.append(s[LATENCY] + s[WAIT])
        elif is_served(s):
            out.served += 1
            out.degraded += int(s[DEGRADED])
            latencies.append(s[LATENCY])
        else:
            out.errors += 1
    if latencies:
        out.p50, out.p90, out.p99 = (percentile(latencies, q) for q in (50, 90, 99))
        out.mean = sum(latencies) / len(latencies)
    if cycles:
        out.refused_cycle = sum(cycles) / len(cycles)
    return out


def in_window(samples: Iterable[Sample], start: float, end: float) -> list[Sample]:
    """The requests sent in [start, end)."""
    return [s for s in samples if start <= s[SENT] < end]


def by_type(samples: Sequence[Sample], seconds: float) -> dict[str, Stats]:
    """Stats per request type (in :data:`TYPES` order, types never sent left out), and "all"."""
    groups: dict[int, list[Sample]] = {}
    for s in samples:
        groups.setdefault(int(s[TYPE]), []).append(s)
    out = {TYPES[k]: stats(groups[k], seconds) for k in sorted(groups)}
    out["all"] = stats(samples, seconds)
    return out


def by_class(samples: Sequence[Sample], seconds: float) -> dict[int, Stats]:
    """Stats per user class: even users are class 0, odd ones class 1."""
    groups: dict[int, list[Sample]] = {0: [], 1: []}
    for s in samples:
        groups[int(s[USER]) % 2].append(s)
    return {c: stats(g, seconds) for c, g in groups.items()}


@dataclass
class Window:
    """One slice of a timeline, by the time requests ended (sent + latency)."""

    start: float
    admitted: int = 0  # answered, not refused (served, degraded included)
    refused: int = 0
    errors: int = 0
    p90: float = math.nan  # of the served requests that ended in the window


def windows(samples: Iterable[Sample], start: float, end: float, width: float) -> list[Window]:
    """The timeline [start, end) in windows of ``width`` seconds: requests counted where they
    ended, the p90 over the served ones (what users saw at that moment)."""
    n = max(0, math.ceil((end - start) / width - 1e-9))
    out = [Window(start + k * width) for k in range(n)]
    latencies: list[list[float]] = [[] for _ in range(n)]
    for s in samples:
        k = math.floor((s[SENT] + s[LATENCY] - start) / width)
        if not 0 <= k < n:
            continue
        if is_refused(s):
            out[k].refused += 1
        elif is_served(s):
            out[k].admitted += 1
            latencies[k].append(s[LATENCY])
        else:
            out[k].errors += 1
    for w, lat in zip(out, latencies, strict=True):
        w.p90 = percentile(lat, 90)
    return out


def recovery(
    timeline: Sequence[Window], jump: float, drop: float, target: float, width: float
) -> tuple[float, float, int, int]:
    """How the p90 came back after the jump, over the windows (``width`` seconds) in
    [jump, drop):
    (seconds from the jump to the end of the last window over ``target``, 0 when none is; the
    worst p90; windows over the target; windows). The p90 is "back under the target within
    0.5 s" when only the first 0.5 s window may be over it: it then stays under while the spike
    lasts. A window in which nobody was answered counts as over (nobody was served in time).
    """
    during = [w for w in timeline if jump - 1e-9 <= w.start < drop - 1e-9]
    over = [w for w in during if not w.p90 <= target]  # NaN (nobody answered) is over
    last = max((w.start for w in over), default=None)
    settled = 0.0 if last is None else last + width - jump
    worst = max((w.p90 for w in during if not math.isnan(w.p90)), default=math.nan)
    return settled, worst, len(over), len(during)


# --- processes ------------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    """Run in the children: a thousand users need a thousand sockets on each side."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    """``argv`` under ``taskset -c CPU`` (unchanged when ``cpu`` is None)."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


class Server:
    """``python -m examples.arashi`` in a subprocess; ``url`` once it says it listens."""

    def __init__(
        self, args: Sequence[str], *, cpu: int | None, log: Path, ready_timeout: float = 600
    ) -> None:
        self.argv = pinned(cpu, [sys.executable, "-m", "examples.arashi", "--port", "0", *args])
        self.log = log
        self.ready_timeout = ready_timeout
        self.url = ""
        self.startup = math.nan
        self._proc: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._drain_thread: threading.Thread | None = None

    def __enter__(self) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        err = self.log.open("wb")
        begin = time.monotonic()
        self._proc = subprocess.Popen(
            self.argv,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            preexec_fn=_raise_fd_limit,
        )
        err.close()
        self._drain_thread = threading.Thread(
            target=self._drain, daemon=True, name="arashi-server-out"
        )
        self._drain_thread.start()
        deadline = begin + self.ready_timeout
        try:
            while True:
                try:
                    line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(
                        f"the service said nothing for {self.ready_timeout:.0f} s; see {self.log}"
                    ) from None
                if line is None:
                    code = self._proc.wait()
                    raise RuntimeError(
                        f"the service exited ({code}) before listening; see {self.log}"
                    )
                text = line.decode(errors="replace").strip()
                if text.startswith("listening on "):
                    self.url = text.removeprefix("listening on ").strip()
                    self.startup = time.monotonic() - begin
                    return self
        except BaseException:
            self.stop()
            raise

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with self._proc.stdout as out:
            for line in out:
                self._lines.put(line)
        self._lines.put(None)

    def stop(self) -> int | None:
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        code = self._proc.returncode
        self._proc = None
        if self._drain_thread is not None:
            self._drain_thread.join(timeout=5)  # it closes the pipe at its end
        return code

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Case:
    """One run: a fresh service under one load schedule, and every request it got."""

    name: str
    server_args: list[str]
    schedule: list[tuple[float, int]]
    duration: float
    warmup: float
    samples: list[list[float]] = field(default_factory=list)
    startup: float = math.nan
    exit_code: int | None = None
    generator: dict[str, Any] = field(default_factory=dict)

    @property
    def users(self) -> int:
        return max(n for _, n in self.schedule)

    def measured(self) -> list[Sample]:
        return in_window(self.samples, self.warmup, self.duration)

    def types(self) -> dict[str, Stats]:
        return by_type(self.measured(), self.duration - self.warmup)

    def classes(self) -> dict[int, Stats]:
        return by_class(self.measured(), self.duration - self.warmup)


@dataclass
class Settings:
    target: float = 1.0
    duration: float = 40.0  # measured seconds of each steady run
    warmup: float = 10.0  # users start, log in; the controllers settle
    users: int = 128
    spike_low: int = 3
    spike_high: int = 1000
    spike_before: float = 10.0
    spike_during: float = 20.0
    spike_after: float = 10.0
    server: str | None = None
    # The service's --render-cost: 400 renders per page put it about 4x over capacity with
    # 128 users (p90 5.5 s without control), the regime of the seed's figure (7.5 s); at the
    # service's own default (100) 128 users barely overload it (p90 1.4 s).
    render_cost: int | None = 400
    pin: bool = True
    ramp: float = 2.0
    references: bool = True  # also the reference runs (usits in the spike, classes off)
    progress: bool | None = None
    out: Path = RESULTS
    seed: int = 1


class Bench:
    """Runs cases (each once per invocation: a case several scenarios share is reused)."""

    def __init__(self, settings: Settings, console: Any) -> None:
        self.s = settings
        self.console = console
        self.cases: dict[str, Case] = {}
        pin = settings.pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
        self.server_cpu: int | None = 0 if pin else None
        self.load_cpu: int | None = 1 if pin else None
        self.logs = settings.out / "arashi-logs"

    def server_args(self, users: int, control: str, *extra: str) -> list[str]:
        args = ["--users", str(users), "--control", control, "--target", f"{self.s.target:g}"]
        if self.s.server:
            args += ["--server", self.s.server]
        if self.s.render_cost is not None:
            args += ["--render-cost", str(self.s.render_cost)]
        return args + list(extra)

    def run(
        self,
        name: str,
        server_args: list[str],
        schedule: list[tuple[float, int]],
        duration: float,
        warmup: float,
        *,
        ramp: float | None = None,
    ) -> Case:
        if name in self.cases:
            return self.cases[name]
        case = Case(name, server_args, schedule, duration, warmup)
        sched = ",".join(f"{t:g}:{n}" for t, n in schedule)
        with tempfile.TemporaryDirectory(prefix="arashi-") as tmp:
            out = Path(tmp) / "samples.json"
            with Server(server_args, cpu=self.server_cpu, log=self.logs / f"{name}.log") as server:
                case.startup = server.startup
                argv = pinned(
                    self.load_cpu,
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.arashi_load",
                        "--url",
                        server.url,
                        "--schedule",
                        sched,
                        "--duration",
                        f"{duration:g}",
                        "--think",
                        f"{THINK:g}",
                        "--ramp",
                        f"{self.s.ramp if ramp is None else ramp:g}",
                        "--grace",
                        f"{max(5.0, 10 * self.s.target):g}",
                        "--seed",
                        str(self.s.seed),
                        "--out",
                        str(out),
                    ],
                )
                case.generator = self._load(name, argv, duration)
                case.exit_code = server.stop()
            data = json.loads(out.read_text())
        if list(data["types"]) != list(TYPES):
            raise RuntimeError("the load generator's request types differ from the driver's")
        case.samples = data["samples"]
        case.generator["loop"] = data.get("loop")
        self.cases[name] = case
        return case

    def _load(self, name: str, argv: list[str], duration: float) -> dict[str, Any]:
        """Run the load generator, showing its progress lines on a bar."""
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            preexec_fn=_raise_fd_limit,
            text=True,
        )
        assert proc.stdout is not None
        last: dict[str, Any] = {}
        with proc.stdout, _bar(self.console, name, duration, self.s.progress) as update:
            for line in proc.stdout:
                with contextlib.suppress(ValueError):
                    last = json.loads(line)
                    update(last)
        if proc.wait() != 0:
            raise RuntimeError(f"the load generator failed ({proc.returncode}) in {name}")
        return last


@contextlib.contextmanager
def _bar(console: Any, name: str, seconds: float, option: bool | None) -> Iterator[Any]:
    """A transient rich progress bar fed by the generator's progress lines."""
    enabled = option if option is not None else console.is_terminal
    if not enabled:
        yield lambda line: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=True,
    )
    task = progress.add_task(name, total=seconds, status="starting")

    def update(line: dict[str, Any]) -> None:
        if "t" in line:
            status = (
                f"users {line['users']}  ok {line['ok']}  refused {line['refused']}  "
                f"errors {line['errors']}"
            )
            progress.update(task, completed=min(seconds, line["t"]), status=status)

    with progress:
        yield update


# --- scenarios ------------------------------------------------------------------------------


@dataclass
class Check:
    scenario: str
    what: str
    value: str
    target: str
    ok: bool | None  # None: reported, not a target

    @property
    def verdict(self) -> str:
        return "ref" if self.ok is None else ("PASS" if self.ok else "MISS")


class Results:
    """What the scenarios found: tables to print, checks, and data for the JSON and plots."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.data: dict[str, Any] = {}
        self.capacity = math.nan


def steady(bench: Bench, name: str, users: int, control: str, *extra: str) -> Case:
    s = bench.s
    return bench.run(
        name,
        bench.server_args(users, control, *extra),
        [(0.0, users)],
        s.warmup + s.duration,
        s.warmup,
    )


def capacity(bench: Bench) -> float:
    """C: the largest served rate of the N-user runs so far (none is always among them)."""
    names = [n for n in ("none", "aimd", "usits", "limit") if n in bench.cases]
    return max(bench.cases[n].types()["all"].served_rate for n in names)


def minimum(bench: Bench, case: Case, users: int) -> tuple[float, float, float]:
    """(f_min, X_T, B) for ``case`` at the capacity measured so far."""
    s = bench.s
    total = case.types()["all"]
    cycle = total.refused_cycle if not math.isnan(total.refused_cycle) else 1.0
    cap = capacity(bench)
    return (
        min_refused_share(users, THINK, s.target, cap, cycle),
        offered_at_target(users, THINK, s.target),
        cycle,
    )


def _slow(types: dict[str, Stats], target: float) -> list[str]:
    """The request types over the target (those nobody got an answer to say so)."""
    return [
        k + (": none answered" if math.isnan(t.p90) else "")
        for k, t in types.items()
        if k != "all" and not t.p90 <= target
    ]


def figure_checks(
    bench: Bench, results: Results, scenario: str, case: Case, *, target: bool
) -> None:
    s = bench.s
    types = case.types()
    fmin, xt, cycle = minimum(bench, case, s.users)
    worst = max((t.p90 for k, t in types.items() if k != "all"), default=math.nan)
    slow = _slow(types, s.target)
    results.checks.append(
        Check(
            scenario,
            f"{case.name}: every type's p90 <= target",
            f"worst {_ms(worst)}" + (f" ({', '.join(slow)})" if slow else ""),
            f"<= {_ms(s.target)}",
            (not slow) if target else None,
        )
    )
    refused = types["all"].refused_share
    results.checks.append(
        Check(
            scenario,
            f"{case.name}: refused share within {SLACK:.0%} of the minimum",
            f"{_pct(refused)} (min {_pct(fmin)}: C {capacity(bench):.0f}/s, "
            f"X_T {xt:.0f}/s, B {cycle:.2f} s)",
            f"<= {_pct(fmin + SLACK)}",
            (refused <= fmin + SLACK) if target else None,
        )
    )


def scenario_figure(bench: Bench, results: Results) -> None:
    s = bench.s
    runs = [steady(bench, c, s.users, c) for c in ("none", "aimd", "usits")]
    results.data["figure"] = {c.name: _case_dict(c) for c in runs}
    figure_checks(bench, results, "figure", runs[1], target=True)
    figure_checks(bench, results, "figure", runs[2], target=False)


def limit_for(bench: Bench) -> int:
    """L = C x T / 2 x p_max (module docstring), from the uncontrolled run's served rate."""
    cap = bench.cases["none"].types()["all"].served_rate
    share = max(MIX.values()) / sum(MIX.values())
    return max(1, round(cap * bench.s.target / 2 * share))


def scenario_alternatives(bench: Bench, results: Results) -> None:
    s = bench.s
    none = steady(bench, "none", s.users, "none")
    n = limit_for(bench)
    limit = steady(bench, "limit", s.users, f"limit:{n}")
    results.data["alternatives"] = {"none": _case_dict(none), "limit": _case_dict(limit)}
    results.data["alternatives"]["limit"]["limit"] = n
    figure_checks(bench, results, "alternatives", none, target=False)
    figure_checks(bench, results, "alternatives", limit, target=False)


def scenario_degrade(bench: Bench, results: Results) -> None:
    s = bench.s
    steady(bench, "none", s.users, "none")  # for the capacity
    plain = steady(bench, "aimd", s.users, "aimd")
    degraded = steady(bench, "aimd+degrade", s.users, "aimd", "--degrade")
    results.data["degrade"] = {"aimd": _case_dict(plain), "aimd+degrade": _case_dict(degraded)}
    dt = degraded.types()
    slow = _slow(dt, s.target)
    worst = max((t.p90 for k, t in dt.items() if k != "all"), default=math.nan)
    results.checks.append(
        Check(
            "degrade",
            "aimd+degrade: every type's p90 <= target",
            f"worst {_ms(worst)}" + (f" ({', '.join(slow)})" if slow else ""),
            f"<= {_ms(s.target)}",
            not slow,
        )
    )
    with_ = dt["all"].refused_share
    without = plain.types()["all"].refused_share
    results.checks.append(
        Check(
            "degrade",
            "refused (503) with degrade < without",
            f"{_pct(with_)} vs {_pct(without)} (degraded {_pct(dt['all'].degraded_share)})",
            "with < without",
            with_ < without,
        )
    )


def scenario_classes(bench: Bench, results: Results) -> None:
    s = bench.s
    users = 2 * s.users
    runs = [steady(bench, "classes", users, "aimd", "--classes")]
    if s.references:
        runs.append(steady(bench, "no classes", users, "aimd"))
    results.data["classes"] = {}
    for case in runs:
        per = case.classes()
        data = _case_dict(case)
        data["classes"] = {str(k): v.to_dict() for k, v in per.items()}
        results.data["classes"][case.name] = data
        high, low = per[0].refused_share, per[1].refused_share
        results.checks.append(
            Check(
                "classes",
                f"{case.name}: class 0 refused <= half of class 1",
                f"{_pct(high)} vs {_pct(low)}",
                "<= 0.5 x",
                (low > 0 and high <= low / 2) if case.name == "classes" else None,
            )
        )


def scenario_spike(bench: Bench, results: Results) -> None:
    s = bench.s
    jump = s.spike_before
    drop = jump + s.spike_during
    end = drop + s.spike_after
    schedule = [(0.0, s.spike_low), (jump, s.spike_high), (drop, s.spike_low)]
    controls = ["aimd", "usits"] if s.references else ["aimd"]
    results.data["spike"] = {}
    for control in controls:
        case = bench.run(
            f"spike {control}",
            bench.server_args(s.spike_high, control),
            schedule,
            end,
            0.0,
            ramp=0.0,
        )
        timeline = windows(case.samples, 0.0, end, WINDOW)
        back, worst, over, n = recovery(timeline, jump, drop, s.target, WINDOW)
        spike = stats(in_window(case.samples, jump, drop), drop - jump)
        results.data["spike"][control] = {
            "schedule": schedule,
            "window": WINDOW,
            "timeline": [_clean_dict(asdict(w)) for w in timeline],
            "recovery": back,
            "worst_p90": _clean(worst),
            "windows_over": over,
            "windows": n,
            "during": spike.to_dict(),
            "startup": case.startup,
        }
        target = control == "aimd"
        results.checks.append(
            Check(
                "spike",
                f"{control}: p90 under target from 0.5 s after the jump",
                f"last over at +{back:.1f} s ({over} of {n} windows over)",
                f"<= {WINDOW:g} s",
                (back <= WINDOW + 1e-9) if target else None,
            )
        )
        results.checks.append(
            Check(
                "spike",
                f"{control}: worst p90 during the spike",
                f"{_ms(worst)} (refused {_pct(spike.refused_share)})",
                f"< {_ms(2 * s.target)}",
                (worst < 2 * s.target) if target else None,
            )
        )


RUNNERS = {
    "figure": scenario_figure,
    "spike": scenario_spike,
    "classes": scenario_classes,
    "degrade": scenario_degrade,
    "alternatives": scenario_alternatives,
}


# --- output ---------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _clean_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _clean(v) for k, v in d.items()}


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _pct(share: float) -> str:
    return "-" if math.isnan(share) else f"{share * 100:.1f} %"


def _case_dict(case: Case) -> dict[str, Any]:
    return {
        "server_args": case.server_args,
        "schedule": case.schedule,
        "warmup": case.warmup,
        "duration": case.duration,
        "startup": case.startup,
        "server_exit": case.exit_code,
        "generator": case.generator,
        "types": {k: v.to_dict() for k, v in case.types().items()},
    }


def type_table(title: str, cases: Sequence[Case], target: float) -> Any:
    """Per request type: p90 of the answered requests and the share refused, per run."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("type")
    for case in cases:
        table.add_column(f"{case.name}\np90", justify="right")
        table.add_column("refused", justify="right")
    per = [case.types() for case in cases]
    for kind in (*TYPES, "all"):
        row = [kind]
        for types in per:
            t = types.get(kind)
            if t is None:
                row += ["-", "-"]
                continue
            p90 = _ms(t.p90)
            if not t.p90 <= target:
                p90 = f"[red]{p90}[/red]"
            row += [p90, _pct(t.refused_share)]
        table.add_row(*row, end_section=kind == TYPES[-1])
    rates = ["served/s"]
    for types in per:
        rates += [f"{types['all'].served_rate:.0f}", f"{types['all'].offered_rate:.0f} sent/s"]
    table.add_row(*rates)
    errors = ["errors"]
    for types in per:
        errors += [str(types["all"].errors), f"deg {_pct(types['all'].degraded_share)}"]
    table.add_row(*errors)
    return table


def print_results(console: Any, bench: Bench, results: Results) -> None:
    from rich.table import Table

    s = bench.s
    c = bench.cases
    groups = [
        ("The Arashi figure", ["none", "aimd", "usits"]),
        ("Against what users run instead", ["none", "limit"]),
        ("Degradation", ["aimd", "aimd+degrade"]),
    ]
    for title, names in groups:
        cases = [c[n] for n in names if n in c]
        if len(cases) == len(names):
            console.print(
                type_table(f"{title}: {s.users} users, target p90 {_ms(s.target)}", cases, s.target)
            )
    if "limit" in c:
        console.print(
            f"limit: {c['limit'].server_args[3]} per route (C x T / 2 x p_max, C of none)"
        )
    for name in ("classes", "no classes"):
        if name in c:
            table = Table(title=f"{name}: 2 x {s.users} users", title_justify="left")
            for col in ("class", "requests", "p90", "refused"):
                table.add_column(col, justify="right")
            for k, v in c[name].classes().items():
                table.add_row(str(k), str(v.requests), _ms(v.p90), _pct(v.refused_share))
            console.print(table)
    for control, spike in results.data.get("spike", {}).items():
        table = Table(
            title=f"spike {control}: {s.spike_low} -> {s.spike_high} users at "
            f"{s.spike_before:g} s, back at {s.spike_before + s.spike_during:g} s "
            f"(0.5 s windows, every 2nd shown)",
            title_justify="left",
        )
        for col in ("t", "p90", "admitted/s", "refused/s"):
            table.add_column(col, justify="right")
        for w in spike["timeline"][::2]:
            p90 = w["p90"] if w["p90"] is not None else math.nan
            table.add_row(
                f"{w['start']:.1f}",
                _ms(p90),
                f"{w['admitted'] / WINDOW:.0f}",
                f"{w['refused'] / WINDOW:.0f}",
            )
        console.print(table)
    if results.checks:
        table = Table(title="Targets", title_justify="left")
        for col in ("scenario", "check", "value", "target", ""):
            table.add_column(col)
        for ch in results.checks:
            style = {"PASS": "green", "MISS": "red"}.get(ch.verdict, "dim")
            table.add_row(
                ch.scenario, ch.what, ch.value, ch.target, f"[{style}]{ch.verdict}[/{style}]"
            )
        console.print(table)
    startups = {n: f"{k.startup:.1f} s" for n, k in c.items()}
    console.print(f"service start-up (database built): {startups}")


def write_json(path: Path, bench: Bench, results: Results) -> None:
    s = asdict(bench.s)
    s["out"] = str(s["out"])
    data = {
        "settings": s,
        "think": THINK,
        "pinned": bench.server_cpu is not None,
        "capacity": _clean(results.capacity),
        "scenarios": results.data,
        "checks": [asdict(ch) | {"verdict": ch.verdict} for ch in results.checks],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def plot(bench: Bench, results: Results, out: Path, suffix: str = "") -> list[Path]:
    """PNGs: per-type p90 and refused share per run, the spike's timeline, class refusals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = bench.s
    written: list[Path] = []
    names = [n for n in ("none", "limit", "usits", "aimd", "aimd+degrade") if n in bench.cases]
    if names:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
        kinds = [*TYPES, "all"]
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            types = bench.cases[name].types()
            xs = [k + (i - (len(names) - 1) / 2) * width for k in range(len(kinds))]
            p90 = [types[k].p90 if k in types else math.nan for k in kinds]
            ref = [100 * types[k].refused_share if k in types else math.nan for k in kinds]
            ax1.bar(xs, p90, width, label=name)
            ax2.bar(xs, ref, width, label=name)
        ax1.axhline(s.target, color="black", linestyle="--", linewidth=1, label="target")
        ax1.set_yscale("log")
        ax1.set_ylabel("p90 of answered (s)")
        ax1.legend(fontsize="small", ncol=3)
        ax2.set_ylabel("refused (%)")
        ax2.set_xticks(range(len(kinds)), kinds)
        fig.suptitle(
            f"Arashi: {s.users} users, think {THINK * 1000:.0f} ms, target {_ms(s.target)}"
        )
        fig.tight_layout()
        written.append(_save(fig, out / f"arashi-types{suffix}.png"))
        plt.close(fig)
    spikes = results.data.get("spike", {})
    if spikes:
        fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
        for control, spike in spikes.items():
            tl = spike["timeline"]
            ts = [w["start"] + WINDOW / 2 for w in tl]
            axes[0].plot(
                ts, [w["p90"] if w["p90"] is not None else math.nan for w in tl], label=control
            )
            axes[1].plot(ts, [w["admitted"] / WINDOW for w in tl], label=control)
            axes[2].plot(ts, [w["refused"] / WINDOW for w in tl], label=control)
        axes[0].axhline(s.target, color="black", linestyle="--", linewidth=1, label="target")
        axes[0].axhline(2 * s.target, color="grey", linestyle=":", linewidth=1, label="2 x target")
        axes[0].set_ylabel("p90 (s)")
        axes[1].set_ylabel("admitted/s")
        axes[2].set_ylabel("refused/s")
        axes[2].set_xlabel("time (s)")
        for ax in axes:
            ax.axvspan(s.spike_before, s.spike_before + s.spike_during, color="orange", alpha=0.1)
            ax.legend(fontsize="small")
        fig.suptitle(f"Spike: {s.spike_low} -> {s.spike_high} -> {s.spike_low} users")
        fig.tight_layout()
        written.append(_save(fig, out / f"arashi-spike{suffix}.png"))
        plt.close(fig)
    runs = [n for n in ("classes", "no classes") if n in bench.cases]
    if runs:
        from matplotlib.patches import Rectangle

        fig, ax = plt.subplots(figsize=(6, 4))
        for i, run in enumerate(runs):
            per = bench.cases[run].classes()
            ax.bar(
                [i - 0.2, i + 0.2],
                [100 * per[0].refused_share, 100 * per[1].refused_share],
                0.4,
                color=["tab:blue", "tab:orange"],
            )
        ax.set_xticks(range(len(runs)), runs)
        ax.set_ylabel("refused (%)")
        ax.legend(
            handles=[Rectangle((0, 0), 1, 1, color=c) for c in ("tab:blue", "tab:orange")],
            labels=["class 0 (paying)", "class 1 (free)"],
        )
        ax.set_title(f"Differentiation: 2 x {s.users} users")
        fig.tight_layout()
        written.append(_save(fig, out / f"arashi-classes{suffix}.png"))
        plt.close(fig)
    return written


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# --- command line ---------------------------------------------------------------------------


def settings_from(args: argparse.Namespace) -> Settings:
    s = Settings()
    if args.quick:
        s = Settings(
            duration=8.0,
            warmup=4.0,
            spike_high=300,
            spike_before=4.0,
            spike_during=6.0,
            spike_after=4.0,
            ramp=1.0,
            references=False,
        )
    if args.target is not None:
        s.target = args.target
    if args.duration is not None:
        s.duration = args.duration
    if args.users is not None:
        s.users = args.users
    if args.spike_users is not None:
        s.spike_high = args.spike_users
    s.server = args.server
    if args.render_cost is not None:
        s.render_cost = args.render_cost
    s.pin = not args.no_pin
    s.progress = args.progress
    s.out = Path(args.out)
    if args.references is not None:
        s.references = args.references
    return s


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(SCENARIOS)
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    return [p for p in SCENARIOS if p in chosen]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Arashi under overload (issue 7).")
    parser.add_argument(
        "--quick", action="store_true", help="short runs (4 + 8 s), spike to 300 users"
    )
    parser.add_argument("--only", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--duration", type=float, help="measured seconds per steady run (40)")
    parser.add_argument("--target", type=float, help="p90 target in seconds (1)")
    parser.add_argument("--users", type=int, help="users of the figure (128; classes: 2x)")
    parser.add_argument("--spike-users", type=int, help="users during the spike (1000)")
    parser.add_argument("--server", choices=("uvicorn", "hypercorn"), help="the service's server")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--render-cost",
        type=int,
        help="the service's --render-cost: renders per page, so its capacity (400)",
    )
    parser.add_argument(
        "--references",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also the reference runs (usits spike, classes off); default: on unless --quick",
    )
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar"
    )
    parser.add_argument("--out", default=str(RESULTS), help="directory for JSON and PNGs")
    args = parser.parse_args(argv)
    settings = settings_from(args)
    only = parse_only(args.only)

    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))  # tables unwrapped in a log file
    bench = Bench(settings, console)
    results = Results()
    console.print(
        f"Arashi benchmark: {', '.join(only)}; target p90 {_ms(settings.target)}, "
        f"{settings.users} users, {settings.warmup:g} + {settings.duration:g} s per steady run"
        + ("" if bench.server_cpu is not None else " (not pinned)")
    )
    begin = time.monotonic()
    for name in only:
        RUNNERS[name](bench, Results())
    # Again, now that every run is made (each is made once): the checks use the capacity
    # measured over all of them.
    for name in only:
        RUNNERS[name](bench, results)
    if any(n in bench.cases for n in ("none", "aimd", "usits", "limit")):
        results.capacity = capacity(bench)
    print_results(console, bench, results)
    if not math.isnan(results.capacity):
        xt = offered_at_target(settings.users, THINK, settings.target)
        console.print(
            f"capacity C {results.capacity:.1f} served/s; offered at the target X_T = N / (Z + T)"
            f" = {xt:.1f}/s; 1 - C / X_T = {_pct(max(0.0, 1 - results.capacity / xt))}"
        )
        if results.capacity >= xt:
            console.print(
                f"[yellow]warning: the service is not overloaded at {settings.users} users "
                f"(C >= X_T): nothing need be refused, and the figure's refusal target is "
                f"moot; a busy machine lowers C, a quiet one raises it: raise --users, or "
                f"lower --target[/yellow]"
            )
    suffix = "-quick" if args.quick else ""
    json_path = settings.out / f"arashi{suffix}.json"
    write_json(json_path, bench, results)
    pngs = plot(bench, results, settings.out, suffix)
    console.print(f"wrote {json_path}" + "".join(f", {p}" for p in pngs))
    misses = sum(ch.ok is False for ch in results.checks)
    console.print(f"{time.monotonic() - begin:.0f} s; {misses} target(s) missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
