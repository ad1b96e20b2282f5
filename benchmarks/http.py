"""Haboob against what Python users run instead: static files under 1 to 1024 clients.

Run by hand from the repository root (a benchmark, not a test); docs/http-benchmark.md has
the method and how to read the output::

    python -m benchmarks.http                    # 5 servers x 5 client counts, ~15 min
    python -m benchmarks.http --quick            # 1, 16, 64 clients, 3 s each, ~2 min
    python -m benchmarks.http --servers haboob-uvloop,threads --clients 256,1024
    python -m benchmarks.http --connections 10000   # memory per held keep-alive connection

The servers (each its own process, pinned to core 0 with ``taskset -c 0``):

* ``haboob-uvloop``, ``haboob-trio``: ``python -m examples.haboob --backend uvloop|trio``;
* ``threads``: ``ThreadingHTTPServer``, a thread per connection, no cap;
* ``pool150``: 150 worker threads serving queued connections (the paper's Apache);
* ``uvicorn``: uvicorn + Starlette ``StaticFiles``;

(the last three from benchmarks/http_servers.py). The load generator
(benchmarks/http_load.py, its own process, pinned to core 1) runs the Haboob paper's clients:
closed loop, 20 ms think time, a new connection every 5 requests, URLs in the SPECweb99 mix
over a file set (examples/haboob/fileset.py) several times Haboob's page cache. One server
process serves every client count, in increasing order; each point is a fresh load-generator
process: ``--warmup`` seconds, then the ``--duration`` seconds measured.

Printed per server and client count: throughput (MB/s, 10**6 bytes, and requests/s), mean,
median, 90th, 99th percentile and max response time, Jain's index over the clients'
throughputs, errors and refusals (HTTP 503), and both processes' CPU use; then the issue's
three targets, PASS/MISS, for each Haboob backend, at the largest client count. Written to
``--out`` (benchmarks/results/): http.json (every figure), http-throughput.png (throughput and
fairness vs clients) and http-cdf.png (response-time CDF at the largest client count).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["SERVERS", "Config", "ServerProcess", "main", "run_load", "server_command"]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PYTHON = sys.executable

SERVERS = ("haboob-uvloop", "haboob-trio", "threads", "pool150", "uvicorn")
BASELINES = ("threads", "pool150", "uvicorn", "trivial")
#: server and load generator cores
SERVER_CPU, LOAD_CPU = 0, 1
MB = 1e6
#: a generator using more of its core than this may be the bottleneck
GEN_BUSY = 0.85
#: the 10k-connection mode asks for this file on every connection (102 bytes)
HOLD_PATH = "/dir00000/class0_1"


@dataclass
class Config:
    """What one run does (from the command line)."""

    servers: list[str]
    clients: list[int]
    duration: float
    warmup: float
    set_mb: float
    cache_mb: float
    root: Path
    out: Path
    think: float = 0.020
    per_connection: int = 5
    grace: float = 2.0
    seed: int = 1
    calibrate: bool = True
    progress: bool = True
    pin: bool = True
    connections: int | None = None
    quick: bool = False
    extra: dict[str, list[str]] = field(default_factory=dict)


# Processes -----------------------------------------------------------------------------------


def _pinned(cpu: int | None) -> list[str]:
    if cpu is None:
        return []
    if shutil.which("taskset") is None or cpu not in os.sched_getaffinity(0):
        return []
    return ["taskset", "-c", str(cpu)]


def server_command(kind: str, root: Path, cache_mb: float, extra: Sequence[str] = ()) -> list[str]:
    """The command line that starts server ``kind`` on any free port (not pinned)."""
    if kind.startswith("haboob-"):
        backend = kind.removeprefix("haboob-")
        command = [PYTHON, "-m", "examples.haboob", "--root", str(root), "--port", "0"]
        command += ["--backend", backend, "--cache-mb", f"{cache_mb:g}"]
    elif kind in BASELINES:
        command = [PYTHON, "-m", "benchmarks.http_servers", kind, "--root", str(root)]
        command += ["--port", "0"]
    else:
        raise ValueError(f"unknown server {kind!r}; known: {', '.join(SERVERS)}")
    return [*command, *extra]


def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


class ServerProcess:
    """A server under test in its own process: started, read from /proc, stopped.

    Use in ``with``: it waits for the ``listening on http://HOST:PORT`` line (raising
    RuntimeError with the server's stderr if the process exits or ``timeout`` passes first)
    and stops the server with SIGTERM (SIGKILL after 10 s) at the end.
    """

    def __init__(
        self,
        kind: str,
        root: Path,
        *,
        cache_mb: float = 64,
        cpu: int | None = SERVER_CPU,
        extra: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> None:
        self.kind = kind
        self.command = [*_pinned(cpu), *server_command(kind, root, cache_mb, extra)]
        self.timeout = timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.returncode: int | None = None
        #: the end of its stderr once stopped (Haboob prints its stage table there)
        self.final_stderr = ""
        self._stderr: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerProcess:
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            self.command,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,  # unbuffered: select() must see every byte not yet read
        )
        try:
            self._await_listening()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _await_listening(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        out = self._proc.stdout
        deadline = time.monotonic() + self.timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([out], [], [], left)[0]:
                raise RuntimeError(f"{self.kind}: not listening after {self.timeout:g} s")
            byte = os.read(out.fileno(), 1)
            if not byte:
                self._proc.wait()
                raise RuntimeError(
                    f"{self.kind} exited ({self._proc.returncode}) before listening: "
                    + self.stderr_tail()
                )
            line += byte
        text = line.decode().strip()
        if not text.startswith("listening on http://"):
            raise RuntimeError(f"{self.kind}: unexpected first line {text!r}")
        address = text.removeprefix("listening on http://")
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        # Drain anything else it prints, so that a full pipe never blocks it.
        threading.Thread(target=out.read, daemon=True, name=f"drain-{self.kind}").start()

    def stderr_tail(self, size: int = 2000) -> str:
        """The end of the server's stderr."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-size:].strip()

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the whole process (every thread)."""
        fields = _proc(self.pid, "stat").rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def status(self) -> dict[str, int]:
        """VmRSS (kB), Threads and open file descriptors of the process."""
        out: dict[str, int] = {}
        for line in _proc(self.pid, "status").splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{self.pid}/fd"))
        return out

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.returncode = proc.returncode
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self.final_stderr = self.stderr_tail(8000)
            self._stderr.close()
            self._stderr = None


def _load_command(cfg: Config, port: int, *args: str) -> list[str]:
    return [
        *(_pinned(LOAD_CPU) if cfg.pin else []),
        PYTHON,
        "-m",
        "benchmarks.http_load",
        "--port",
        str(port),
        *args,
    ]


def run_load(
    command: Sequence[str], timeout: float, tick: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Run a load generator to the end and return its JSON report (the last stdout line).

    Raises:
        RuntimeError: it failed, printed no JSON, or outlasted ``timeout`` (then killed).
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err) as proc,
    ):
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"the load generator outlasted {timeout:g} s")
            if tick is not None:
                tick()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.25)
        out.seek(0)
        err.seek(0)
        lines = out.read().decode().strip().splitlines()
        if proc.returncode != 0 or not lines:
            tail = err.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"the load generator failed ({proc.returncode}): {tail}")
        data: dict[str, Any] = json.loads(lines[-1])
        return data


# The client sweep ----------------------------------------------------------------------------


class _Bar:
    """A rich progress bar over the planned seconds of the whole run (or nothing)."""

    def __init__(self, enabled: bool, total: float) -> None:
        self.progress: Any = None
        self.task: Any = None
        self.done = 0.0
        self.started = 0.0
        if enabled and sys.stdout.isatty():
            with contextlib.suppress(ImportError):
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self.progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TimeElapsedColumn(),
                    transient=True,
                )
                self.task = self.progress.add_task("http benchmark", total=total)

    def __enter__(self) -> _Bar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def print(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, flush=True)

    def point(self, label: str, seconds: float) -> Callable[[], None]:
        """Start a point planned to last ``seconds``; returns the tick that advances it."""
        self.started = time.monotonic()
        if self.progress is not None:
            self.progress.update(self.task, description=label, completed=self.done)

        def tick() -> None:
            if self.progress is not None:
                ran = min(seconds, time.monotonic() - self.started)
                self.progress.update(self.task, completed=self.done + ran)

        return tick

    def finish(self, seconds: float) -> None:
        self.done += seconds
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done)


def make_fileset(cfg: Config) -> Any:
    from examples.haboob import fileset

    return fileset.generate(cfg.root, total_bytes=int(cfg.set_mb * 2**20))


def _point(cfg: Config, server: ServerProcess, clients: int, directories: int, bar: _Bar) -> Any:
    seconds = cfg.warmup + cfg.duration
    command = _load_command(
        cfg,
        server.port,
        "--root",
        str(cfg.root),
        "--directories",
        str(directories),
        "--clients",
        str(clients),
        "--duration",
        f"{cfg.duration:g}",
        "--warmup",
        f"{cfg.warmup:g}",
        "--grace",
        f"{cfg.grace:g}",
        "--think",
        f"{cfg.think:g}",
        "--per-connection",
        str(cfg.per_connection),
        "--seed",
        str(cfg.seed),
    )
    tick = bar.point(f"{server.kind}, {clients} clients", seconds)
    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    data = run_load(command, timeout=seconds + cfg.grace + 120, tick=tick)
    wall = time.monotonic() - t0
    bar.finish(seconds + cfg.grace)
    data["server"] = server.kind
    data["server_cpu_share"] = (server.cpu_seconds() - cpu0) / wall if server.alive() else None
    data["server_status"] = server.status() if server.alive() else None
    return data


def calibrate(cfg: Config, directories: int, bar: _Bar) -> dict[str, Any] | None:
    """The load generator's ceiling: 1024 clients (or more) against the trivial server, an
    offered load (up to 51,000 requests/s) that no single Python process can generate."""
    clients = max(1024, *cfg.clients)
    try:
        with ServerProcess("trivial", cfg.root, cpu=SERVER_CPU if cfg.pin else None) as server:
            duration = min(cfg.duration, 5.0)
            seconds = 1 + duration
            command = _load_command(
                cfg,
                server.port,
                "--path",
                "/",
                "--clients",
                str(clients),
                "--duration",
                f"{duration:g}",
                "--warmup",
                "1",
                "--think",
                f"{cfg.think:g}",
                "--per-connection",
                str(cfg.per_connection),
            )
            tick = bar.point(f"calibration: trivial server, {clients} clients", seconds)
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            data = run_load(command, timeout=seconds + 120, tick=tick)
            data["server_cpu_share"] = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
            bar.finish(seconds + cfg.grace)
    except RuntimeError as exc:
        bar.print(f"calibration failed: {exc}")
        return None
    gen = data["generator"]["cpu_share"]
    bar.print(
        f"load generator ceiling: {data['throughput_rps']:.0f} requests/s with {clients} clients "
        f"against a trivial server (generator CPU {gen:.0%} of its core, trivial server "
        f"{data['server_cpu_share']:.0%} of its core)"
    )
    return data


def _ms(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    v = x * 1e3
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def effective_max(point: dict[str, Any]) -> float:
    """The largest response time of a point, counting the requests still unanswered at the
    end (their wait so far, a lower bound)."""
    values = [point["latency"]["max"], point.get("max_waiting")]
    return max((v for v in values if v is not None), default=math.nan)


HEADER = (
    f"{'server':<14} {'clients':>7} {'MB/s':>7} {'req/s':>7} {'mean ms':>8} {'p50 ms':>7} "
    f"{'p90 ms':>7} {'p99 ms':>7} {'max ms':>8} {'Jain':>6} {'errors':>6} {'503':>6} "
    f"{'srv cpu':>7} {'gen cpu':>7}"
)


def row(p: dict[str, Any]) -> str:
    """One line of the results table."""
    lat = p["latency"]
    mx = _ms(lat["max"])
    if p.get("max_waiting") is not None and p["max_waiting"] > (lat["max"] or 0):
        mx = ">" + _ms(p["max_waiting"])  # a request still waited that long at the end
    jain = "-" if p["jain"] is None else f"{p['jain']:.3f}"
    srv = "-" if p.get("server_cpu_share") is None else f"{p['server_cpu_share']:.0%}"
    gen_share = p["generator"]["cpu_share"]
    gen = f"{gen_share:.0%}" + ("!" if gen_share > GEN_BUSY else "")
    return (
        f"{p['server']:<14} {p['clients']:>7} {p['mbytes_per_s']:>7.2f} "
        f"{p['throughput_rps']:>7.0f} {_ms(lat['mean']):>8} {_ms(lat['p50']):>7} "
        f"{_ms(lat['p90']):>7} {_ms(lat['p99']):>7} {mx:>8} {jain:>6} {p['errors']:>6} "
        f"{p['refused']:>6} {srv:>7} {gen:>7}"
    )


def sweep(cfg: Config) -> dict[str, Any]:
    """Every server at every client count; the results as a JSON-ready dict."""
    fs = make_fileset(cfg)
    print(
        f"file set: {fs.total_bytes / 2**20:.0f} MiB in {fs.directories} directories under "
        f"{cfg.root} (mean response {fs.expected_size() / 1e3:.1f} kB); Haboob's page cache "
        f"{cfg.cache_mb:g} MiB; think {cfg.think * 1e3:g} ms, a new connection every "
        f"{cfg.per_connection} requests; {cfg.warmup:g} s warm-up + {cfg.duration:g} s per point",
        flush=True,
    )
    if not cfg.pin:
        print("not pinned: server and load generator share the cores", flush=True)
    per_point = cfg.warmup + cfg.duration + cfg.grace
    total = per_point * len(cfg.servers) * len(cfg.clients)
    if cfg.calibrate:
        total += 1 + min(cfg.duration, 5.0) + cfg.grace
    results: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "fileset": {
            "root": str(cfg.root),
            "directories": fs.directories,
            "bytes": fs.total_bytes,
            "mean_response_bytes": fs.expected_size(),
        },
        "calibration": None,
        "points": [],
        "failures": [],
        "stderr": {},
    }
    with _Bar(cfg.progress, total) as bar:
        if cfg.calibrate:
            results["calibration"] = calibrate(cfg, fs.directories, bar)
        bar.print(HEADER)
        for kind in cfg.servers:
            try:
                with ServerProcess(
                    kind,
                    cfg.root,
                    cache_mb=cfg.cache_mb,
                    cpu=SERVER_CPU if cfg.pin else None,
                    extra=cfg.extra.get(kind, ()),
                ) as server:
                    for clients in cfg.clients:
                        if not server.alive():
                            raise RuntimeError(f"{kind} died: {server.stderr_tail()}")
                        point = _point(cfg, server, clients, fs.directories, bar)
                        results["points"].append(point)
                        bar.print(row(point))
                results["stderr"][kind] = server.final_stderr
            except RuntimeError as exc:
                bar.print(f"{kind}: FAILED: {exc}")
                results["failures"].append({"server": kind, "error": str(exc)})
    results["targets"] = targets(results["points"], max(cfg.clients))
    return results


# Targets -------------------------------------------------------------------------------------


def targets(points: list[dict[str, Any]], at: int) -> list[dict[str, Any]]:
    """The issue's three targets for each Haboob backend, at ``at`` clients."""
    by = {(p["server"], p["clients"]): p for p in points}
    others = [p for p in points if p["clients"] == at and not p["server"].startswith("haboob")]
    best = max(others, key=lambda p: p["mbytes_per_s"], default=None)
    threads = by.get(("threads", at))
    out: list[dict[str, Any]] = []
    for kind in sorted({p["server"] for p in points if p["server"].startswith("haboob")}):
        h = by.get((kind, at))
        if h is None:
            continue
        own = [p for p in points if p["server"] == kind]
        peak = max(own, key=lambda p: p["mbytes_per_s"])
        checks: list[dict[str, Any]] = []
        if best is not None:
            ratio = h["mbytes_per_s"] / best["mbytes_per_s"] if best["mbytes_per_s"] else math.inf
            checks.append(
                {
                    "target": 1,
                    "ok": ratio >= 1.1,
                    "text": f"throughput at {at} clients {h['mbytes_per_s']:.2f} MB/s = "
                    f"{ratio:.2f}x the best other ({best['server']}, "
                    f"{best['mbytes_per_s']:.2f} MB/s); needs >= 1.1x",
                }
            )
        else:
            checks.append({"target": 1, "ok": None, "text": "no other server ran"})
        jain = h["jain"] if h["jain"] is not None else 0.0
        hmax = effective_max(h)
        if threads is not None:
            tmax = effective_max(threads)
            fair = jain >= 0.98 and hmax <= tmax / 10
            text2 = (
                f"Jain {jain:.3f} (needs >= 0.98); max response {_ms(hmax)} ms vs threads' "
                f"{_ms(tmax)} ms = 1/{tmax / hmax if hmax else math.inf:.1f} (needs <= 1/10)"
            )
        else:
            fair = None
            text2 = f"Jain {jain:.3f}; max response {_ms(hmax)} ms; threads did not run"
        checks.append({"target": 2, "ok": fair, "text": text2})
        share = h["mbytes_per_s"] / peak["mbytes_per_s"] if peak["mbytes_per_s"] else math.nan
        checks.append(
            {
                "target": 3,
                "ok": share >= 0.9,
                "text": f"throughput at {at} clients = {share:.0%} of its peak "
                f"({peak['mbytes_per_s']:.2f} MB/s at {peak['clients']} clients); "
                "needs >= 90 %",
            }
        )
        out.append({"server": kind, "clients": at, "checks": checks})
    return out


def print_targets(results: list[dict[str, Any]], at: int) -> None:
    print()
    note = "" if at == 1024 else f" (the issue sets them at 1024 clients; this run's most: {at})"
    print(f"targets{note}:")
    if not results:
        print("  n/a: no Haboob server ran")
    for entry in results:
        for check in entry["checks"]:
            verdict = {True: "PASS", False: "MISS", None: "n/a "}[check["ok"]]
            print(f"  {verdict}  ({check['target']}) {entry['server']}: {check['text']}")


# Plots ---------------------------------------------------------------------------------------


def plot(points: list[dict[str, Any]], out: Path, at: int) -> list[Path]:
    """Throughput and fairness vs clients, and the response-time CDF at ``at`` clients."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda x, _: f"{x:g}")
    kinds = list(dict.fromkeys(p["server"] for p in points))
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = (
        ("mbytes_per_s", "MB/s", "Throughput (MB/s)"),
        ("throughput_rps", "requests/s", "Throughput (requests/s)"),
        ("jain", "Jain's index", "Fairness over clients"),
    )
    for ax, (key, ylabel, title) in zip(axes, panels, strict=True):
        for kind in kinds:
            own = sorted((p for p in points if p["server"] == kind), key=lambda p: p["clients"])
            xs = [p["clients"] for p in own]
            ys = [p[key] if p[key] is not None else math.nan for p in own]
            ax.plot(xs, ys, marker="o", label=kind)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(plain)
        ax.set_xlabel("clients")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylim(bottom=0)
    fig.suptitle("Static files, closed loop, 20 ms think time (benchmarks/http.py)")
    fig.tight_layout()
    throughput = out / "http-throughput.png"
    fig.savefig(throughput, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    for kind in kinds:
        p = next((p for p in points if p["server"] == kind and p["clients"] == at), None)
        if p is None or not p["cdf"]:
            continue
        xs = [v * 1e3 for _, v in p["cdf"]]
        ys = [q / 100 for q, _ in p["cdf"]]
        ax.step(xs, ys, where="post", label=f"{kind} (max {_ms(effective_max(p))} ms)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plain)
    ax.set_xlabel("response time, ms (log)")
    ax.set_ylabel("share of requests answered within")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Response-time distribution at {at} clients")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    cdf = out / "http-cdf.png"
    fig.savefig(cdf, dpi=100)
    plt.close(fig)
    return [throughput, cdf]


# 10,000 connections --------------------------------------------------------------------------


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    if not select.select([stream], [], [], timeout)[0]:
        raise RuntimeError(f"no answer from the load generator within {timeout:g} s")
    return stream.readline()


def hold(cfg: Config, kind: str, n: int) -> dict[str, Any]:
    """Hold ``n`` keep-alive connections to server ``kind``; its memory before and after."""
    extra = list(cfg.extra.get(kind, ()))
    if kind == "uvicorn":
        extra += ["--keep-alive", "3600"]  # its 5 s default would close the held connections
    result: dict[str, Any] = {"server": kind, "connections": n}
    with ServerProcess(
        kind,
        cfg.root,
        cache_mb=cfg.cache_mb,
        cpu=SERVER_CPU if cfg.pin else None,
        extra=extra,
    ) as server:
        for _ in range(3):  # warm the code paths and the cache up
            conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
            conn.request("GET", HOLD_PATH)
            conn.getresponse().read()
            conn.close()
        time.sleep(0.5)  # let the server close those connections
        before = server.status()
        result["before"] = before
        command = _load_command(
            cfg, server.port, "--hold", str(n), "--path", HOLD_PATH, "--concurrency", "256"
        )
        with subprocess.Popen(
            command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        ) as load:
            assert load.stdin is not None and load.stdout is not None
            try:
                line = _readline(load.stdout, 600)
                if not line:
                    raise RuntimeError(f"the load generator exited ({load.wait()})")
                opened = json.loads(line)
                result["open"] = opened
                if server.alive():
                    after = server.status()
                    result["after"] = after
                    held = after["fds"] - before["fds"]
                    result["held"] = held
                    grown = after["VmRSS"] - before["VmRSS"]
                    result["kb_per_connection"] = grown / held if held > 0 else None
                load.stdin.write(b"close\n")
                load.stdin.flush()
                line = _readline(load.stdout, 600)
                result["done"] = json.loads(line) if line else None
            except RuntimeError as exc:
                result["error"] = str(exc)
                load.kill()
        result["alive"] = server.alive()
        if not server.alive():
            result["exit"] = server._proc.returncode if server._proc else None
            result["stderr"] = server.stderr_tail()
    return result


def hold_all(cfg: Config, n: int) -> list[dict[str, Any]]:
    make_fileset(cfg)
    print(f"holding {n} keep-alive connections (one {HOLD_PATH} request on each)", flush=True)
    print(
        f"{'server':<14} {'opened':>7} {'held':>6} {'RSS before':>11} {'RSS after':>10} "
        f"{'kB/conn':>8} {'threads':>7} {'open s':>7} {'kept':>6}"
    )
    out = []
    for kind in cfg.servers:
        try:
            r = hold(cfg, kind, n)
        except RuntimeError as exc:
            r = {"server": kind, "connections": n, "error": str(exc)}
        out.append(r)
        if "after" in r:
            done = r.get("done") or {}
            kept = n - done["reconnects"] if "reconnects" in done else "-"
            per = "-" if r["kb_per_connection"] is None else f"{r['kb_per_connection']:.1f}"
            print(
                f"{kind:<14} {r['open']['ok']:>7} {r['held']:>6} "
                f"{r['before']['VmRSS'] / 1024:>8.1f} MB {r['after']['VmRSS'] / 1024:>7.1f} MB "
                f"{per:>8} {r['after']['Threads']:>7} {r['open']['seconds']:>7.1f} {kept:>6}"
            )
        else:
            why = r.get("error") or f"server exited ({r.get('exit')}): {r.get('stderr', '')}"
            print(f"{kind:<14} FAILED: {why}")
    return out


# Command line --------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.http",
        description="Haboob against thread-per-connection, a 150-thread pool and uvicorn.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1,16,64 clients, 3 s per point, small set"
    )
    parser.add_argument("--servers", help=f"comma-separated, of {','.join(SERVERS)} (all)")
    parser.add_argument("--clients", type=_ints, help="client counts (1,16,64,256,1024)")
    parser.add_argument("--duration", type=float, help="measured seconds per point (20)")
    parser.add_argument("--warmup", type=float, help="seconds before each point's window (5)")
    parser.add_argument("--set-mb", type=float, help="file set size, MiB (320; quick: 40)")
    parser.add_argument("--cache-mb", type=float, help="Haboob's page cache, MiB (64; quick: 8)")
    parser.add_argument(
        "--root", type=Path, help="where the file set lives (a temporary folder, kept)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--think", type=float, default=0.020, help="think time, s (0.020)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-calibrate", action="store_true", help="skip the load generator's ceiling"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores 0 and 1")
    parser.add_argument(
        "--connections",
        type=int,
        metavar="N",
        help="instead: hold N keep-alive connections to each server, report its memory",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.servers:
        servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    elif args.connections:
        servers = ["haboob-uvloop", "haboob-trio", "uvicorn", "threads"]
    else:
        servers = list(SERVERS)
    for s in servers:
        if s not in SERVERS and s not in BASELINES:
            parser.error(f"unknown server {s!r}; known: {', '.join(SERVERS)}")
    set_mb = args.set_mb if args.set_mb is not None else (40 if quick else 320)
    return Config(
        servers=servers,
        clients=args.clients or ([1, 16, 64] if quick else [1, 16, 64, 256, 1024]),
        duration=args.duration if args.duration is not None else (3.0 if quick else 20.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if quick else 5.0),
        set_mb=set_mb,
        cache_mb=args.cache_mb if args.cache_mb is not None else (8 if quick else 64),
        root=args.root or Path(tempfile.gettempdir()) / "aseda-http-fileset",
        out=args.out,
        think=args.think,
        seed=args.seed,
        calibrate=not args.no_calibrate,
        progress=not args.no_progress,
        pin=not args.no_pin,
        connections=args.connections,
        quick=quick,
    )


@contextlib.contextmanager
def _fd_limit() -> Iterator[None]:
    # The servers inherit it: 10,000 connections need more than the usual 1024 descriptors.
    from benchmarks.http_load import raise_fd_limit

    raise_fd_limit()
    yield


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if not cfg.clients or min(cfg.clients) < 1:
        raise SystemExit("--clients needs positive counts")
    cores = os.sched_getaffinity(0)
    if cfg.pin and not {SERVER_CPU, LOAD_CPU} <= cores:
        print(f"cannot pin to cores {SERVER_CPU} and {LOAD_CPU} (have {sorted(cores)})")
        cfg.pin = False
    with _fd_limit():
        if cfg.connections:
            held = hold_all(cfg, cfg.connections)
            path = cfg.out / "http-connections.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(held, indent=2) + "\n")
            print(f"\nwritten: {path}")
            return 0
        results = sweep(cfg)
    at = max(cfg.clients)
    print_targets(results["targets"], at)
    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / "http.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    written = [path]
    if results["points"]:
        try:
            written += plot(results["points"], cfg.out, at)
        except ImportError:
            print("no plots: matplotlib is not installed (pip install aseda[bench])")
    print("\nwritten: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
