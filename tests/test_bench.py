"""The benchmark toolkit: schedules, fairness, coordinated omission, loads, targets, reports."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import h11
import pytest
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

import aseda
from aseda.bench import (
    HttpTarget,
    Outcome,
    Phase,
    Report,
    Sample,
    Samples,
    TcpTarget,
    arrival_times,
    closed_loop,
    graph_target,
    jain_index,
    offered_rate,
    open_loop,
    phase_spans,
    rate_segments,
    table,
)
from aseda.bench._progress import progress_enabled

ROOT = Path(__file__).resolve().parents[1]


def count_in(times: list[float], lo: float, hi: float) -> int:
    """How many of ``times`` fall in ``[lo, hi)``."""
    return sum(lo <= t < hi for t in times)


# Schedules (pure) --------------------------------------------------------------------------


def test_fixed_rate_gives_exact_counts_and_spacing() -> None:
    """A fixed rate r over d seconds gives r * d arrivals, 1/r apart, starting at 0."""
    times = arrival_times(100, 2.0, poisson=False)
    assert len(times) == 200
    assert times[0] == 0.0 and times[-1] < 2.0
    assert all(b - a == pytest.approx(0.01) for a, b in itertools.pairwise(times))
    assert len(arrival_times(7, 3.0, poisson=False)) == 21
    assert len(arrival_times(3, 0.5, poisson=False)) == 2  # ceil(1.5)
    assert arrival_times(0, 5.0, poisson=False) == []


def test_poisson_count_within_statistical_bounds() -> None:
    """Poisson arrivals at rate r for d seconds: about r * d of them, within 4 sigma."""
    rate, duration = 1000.0, 10.0
    times = arrival_times(rate, duration, seed=7)
    expected = rate * duration
    assert abs(len(times) - expected) < 4 * math.sqrt(expected)
    assert times == sorted(times) and times[0] >= 0 and times[-1] < duration
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / rate, rel=0.05)
    # Exponential gaps: their standard deviation equals their mean (fixed ones have none).
    mean = sum(gaps) / len(gaps)
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    assert sd == pytest.approx(mean, rel=0.1)
    assert arrival_times(rate, 1.0, seed=7) == arrival_times(rate, 1.0, seed=7)
    assert arrival_times(rate, 1.0, seed=7) != arrival_times(rate, 1.0, seed=8)


def test_spike_raises_the_rate_in_its_window() -> None:
    """A later phase overrides the base rate where they overlap, and only there."""
    phases = [Phase(0, 10, 100, "base"), Phase(4, 1, 1000, "spike")]
    fixed = arrival_times(phases, poisson=False)
    assert len(fixed) == 9 * 100 + 1000
    assert count_in(fixed, 4, 5) == 1000
    assert count_in(fixed, 3, 4) == 100 and count_in(fixed, 5, 6) == 100
    poisson = arrival_times(phases, seed=3)
    assert 800 <= count_in(poisson, 4, 5) <= 1200
    assert 50 <= count_in(poisson, 5, 6) <= 150
    assert offered_rate(phases, 4.5) == 1000 and offered_rate(phases, 5.0) == 100
    assert offered_rate(phases, 10.0) == 0.0
    assert phase_spans(phases, 10) == [("base", 0, 4), ("spike", 4, 5), ("base #2", 5, 10)]
    # A gap no phase covers has no arrivals; tuples work as phases.
    gap = arrival_times([(0, 1, 10), (2, 1, 10)], poisson=False)
    assert count_in(gap, 1, 2) == 0 and len(gap) == 20


def test_rate_function_is_integrated() -> None:
    """A rate function's arrivals follow its integral: a ramp 0 -> 200/s over 2 s gives 200."""
    times = arrival_times(lambda t: 100 * t, 2.0, poisson=False)
    assert len(times) == 200
    assert count_in(times, 0, 1) == 50  # the integral of 100 t from 0 to 1
    segments = rate_segments(lambda t: 100 * t, 1.0, resolution=0.25)
    assert segments[0] == (0.0, 0.25, 12.5) and len(segments) == 4


def test_schedule_rejects_bad_input() -> None:
    """Negative rates, phases of no length and a missing duration are errors."""
    with pytest.raises(ValueError, match="rate"):
        arrival_times(-1, 1.0)
    with pytest.raises(ValueError, match="duration"):
        Phase(0, 0, 10)
    with pytest.raises(ValueError, match="needs a duration"):
        arrival_times(10)
    with pytest.raises(ValueError, match="rate"):
        arrival_times(lambda t: -1.0, 1.0)


# Fairness (pure) ---------------------------------------------------------------------------


def test_jain_index_on_known_inputs() -> None:
    """1 when all equal, 1/N when one of N gets everything, the formula in between."""
    assert jain_index([3, 3, 3, 3]) == 1.0
    assert jain_index([10, 0, 0, 0, 0]) == pytest.approx(1 / 5)
    assert jain_index([1, 2, 3]) == pytest.approx(36 / 42)
    assert jain_index([7]) == 1.0
    assert math.isnan(jain_index([])) and math.isnan(jain_index([0, 0]))
    with pytest.raises(ValueError, match="jain_index"):
        jain_index([1, -1])


# Reports (pure) ----------------------------------------------------------------------------


def synthetic() -> Samples:
    """Five hand-made open-loop requests over a 2 s run with 2 clients."""
    ok, refused = Outcome.OK, Outcome.REFUSED
    return Samples(
        "open",
        clients=2,
        end=2.0,
        items=[
            Sample(0, 0, 0.1, 0.1, 0.2, ok),
            Sample(1, 1, 0.5, 0.6, 1.5, ok),  # started late, served in the second interval
            Sample(0, 2, 1.2, 1.2, 1.3, refused, "queue full"),
            Sample(1, 3, 1.4, 1.4, 2.5, ok),  # served after the run's end
            Sample(0, 4, 1.9, 1.95),  # cancelled: unfinished
        ],
    )


def test_report_windows_count_by_intended_and_completion_time() -> None:
    """Offered by intended time, served and latency by completion time, from intended time."""
    report = synthetic().report(name="synthetic", interval=1.0)
    w = report.window
    assert (w.requests, w.sent, w.ok, w.refused, w.errors, w.unfinished) == (5, 5, 2, 1, 0, 1)
    assert w.latency.count == 2 and w.latency.max == pytest.approx(1.0)  # 0.5 -> 1.5
    assert w.lag.max == pytest.approx(0.1)
    assert w.refused_share == pytest.approx(0.2) and w.throughput == pytest.approx(1.0)
    first, second = report.intervals
    assert (first.requests, first.ok, second.requests, second.ok) == (2, 1, 3, 1)
    assert report.client_ok == (1, 1) and report.fairness == 1.0
    assert report.refusals == {"queue full": 1} and report.errors == {}
    late = synthetic().report(warmup=1.0)
    assert (late.window.requests, late.window.ok) == (3, 1)


def test_report_json_round_trip(tmp_path: Path) -> None:
    """A report and its samples survive JSON (nan as null), and the text names its figures."""
    report = synthetic().report(name="synthetic", phases=[("spike", 1.0, 1.5)])
    again = Report.from_json(report.to_json())
    assert again == report
    assert again.to_json() == report.to_json()
    assert json.loads(report.to_json())["window"]["refused_share"] == pytest.approx(0.2)
    path = report.write_json(tmp_path / "out" / "report.json", samples=True)
    full = Report.read_json(path)
    assert full.samples is not None and full.to_json(samples=True) == report.to_json(samples=True)
    assert [s.outcome for s in full.samples.items] == [s.outcome for s in synthetic().items]
    empty = Samples("closed", clients=1, end=1.0).report()
    assert Report.from_json(empty.to_json()).to_json() == empty.to_json()
    text = report.to_text()
    assert "synthetic" in text and "spike" in text and "queue full 1" in text
    assert table([report, empty]).count("\n") == 2


def test_report_plots_to_png(tmp_path: Path) -> None:
    """write_png draws a PNG file (matplotlib, Agg)."""
    path = synthetic().report(name="synthetic").write_png(tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_only_on_a_terminal_for_long_runs() -> None:
    """The bar is off when told, off when stdout is not a terminal, and off for short runs."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert progress_enabled(None, 10.0, io.StringIO()) is False
    assert progress_enabled(None, 10.0, Tty()) is True
    assert progress_enabled(None, 1.0, Tty()) is False
    assert progress_enabled(False, 10.0, Tty()) is False
    assert progress_enabled(True, 1.0, io.StringIO()) is True


# Generators (async, every backend) -----------------------------------------------------------


@pytest.mark.anyio
async def test_open_loop_latency_includes_a_stall() -> None:
    """Requests scheduled during a stall count it: latency runs from their intended time."""
    stall_at, release_at = 5, 25
    release = anyio.Event()

    async def stalling(client_id: int, seq: int) -> None:
        if seq == release_at:
            release.set()  # only a later arrival ends the stall
        if stall_at <= seq < release_at:
            await release.wait()

    report = await open_loop(stalling, 400, 0.1, poisson=False, grace=math.inf)
    assert report.samples is not None
    items = report.samples.items
    assert len(items) == 40 and all(s.outcome is Outcome.OK for s in items)
    # The generator kept sending while earlier requests were stuck (no coordinated omission).
    assert items[release_at].started < items[stall_at].finished
    for s in items[stall_at:release_at]:
        assert s.latency >= items[release_at].intended - s.intended
        assert s.lag >= 0
    stall = items[release_at].intended - items[stall_at].intended  # 50 ms of schedule
    everything = report.samples.window(0.0, math.inf)  # the grace period included
    assert everything.latency.max >= stall - 1e-6 and everything.ok == 40
    assert report.window.lag.count == 40


@pytest.mark.anyio
async def test_open_loop_cancels_what_the_grace_does_not_cover() -> None:
    """After arrivals stop and the grace runs out, pending requests are counted unfinished."""
    never = anyio.Event()
    ended: list[int] = []

    async def hanging(client_id: int, seq: int) -> None:
        await never.wait()

    report = await open_loop(
        hanging, 200, 0.05, poisson=False, grace=0, clients=3, on_end=lambda: ended.append(1)
    )
    assert report.window.requests == 10 and report.window.unfinished == 10
    assert report.window.ok == 0 and math.isnan(report.latency.p50)
    assert ended == [1]
    assert {s.client for s in report.samples.items} == {0, 1, 2}  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_open_loop_with_progress_bar() -> None:
    """A run with its progress bar forced on still measures (the bar draws to stdout)."""

    async def instant(client_id: int, seq: int) -> Outcome:
        return Outcome.OK

    report = await open_loop(instant, 200, 0.05, poisson=False, progress=True)
    assert report.window.requests == 10
    assert [s.outcome for s in report.samples.items] == [Outcome.OK] * 10  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_closed_loop_against_a_graph_counts_per_client() -> None:
    """N clients x M requests through a graph: every client served M times, fairness 1."""

    @aseda.stage(workers=2)
    async def double(x: tuple[int, int]) -> int:
        await anyio.lowlevel.checkpoint()
        return 2 * x[1]

    async with aseda.Graph(double).run() as running:
        target = graph_target(running, lambda client, seq: (client, seq))
        report = await closed_loop(target, clients=4, requests_per_client=25)
    assert report.client_ok == (25, 25, 25, 25)
    assert report.fairness == 1.0
    assert report.window.requests == 100 and report.window.ok == 100
    assert report.latency.count == 100 and report.window.refused == 0
    assert running.stats()["double"].processed == 100
    samples = report.samples
    assert samples is not None
    assert sorted(s.seq for s in samples.items if s.client == 3) == list(range(25))


@pytest.mark.anyio
async def test_closed_loop_outcomes_refused_errors_and_unfair_shares() -> None:
    """Rejected counts as refused, other exceptions as errors; a starved client lowers Jain."""

    async def mixed(client_id: int, seq: int) -> Any:
        if client_id == 1:
            raise aseda.Rejected("front", "queue full", 3)
        if seq == 2:
            raise ValueError("boom")
        if seq == 3:
            return (Outcome.REFUSED, "HTTP 503")
        if seq == 4:
            return "nonsense"
        return None

    report = await closed_loop(mixed, clients=2, requests_per_client=10)
    assert report.client_ok == (7, 0)
    assert report.fairness == pytest.approx(0.5)
    assert report.refusals == {"HTTP 503": 1, "queue full": 10}
    assert report.errors == {"ValueError": 1, "bad target result 'nonsense'": 1}
    assert report.refused_share == pytest.approx(11 / 20)


@pytest.mark.anyio
async def test_graph_target_refusals_from_a_shedding_stage() -> None:
    """A full stage in shed mode refuses: the report counts it with the stage's reason."""
    gate = anyio.Event()

    @aseda.stage(capacity=1, workers=1, on_refuse="shed")
    async def held(x: int) -> int:
        await gate.wait()
        return x

    async with aseda.Graph(held).run() as running:
        target = graph_target(running)

        async def release_later() -> None:
            await anyio.wait_all_tasks_blocked()
            gate.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release_later)
            report = await closed_loop(target, clients=4, requests_per_client=1)
    ok = report.window.ok
    assert ok in (1, 2)  # the one in the handler, maybe one more queued behind it
    assert report.refusals == {"queue full": 4 - ok} and report.window.refused == 4 - ok


# Network targets: tiny servers on the loopback ------------------------------------------------


@dataclass
class ServerLog:
    """What a test server saw."""

    connections: int = 0
    requests: int = 0


@asynccontextmanager
async def serving(
    handler: Callable[[SocketStream, ServerLog], Awaitable[None]],
) -> AsyncIterator[tuple[int, ServerLog]]:
    """Serve ``handler`` on 127.0.0.1, an ephemeral port; yield the port and the log."""
    log = ServerLog()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)

    async def handle(stream: SocketStream) -> None:
        log.connections += 1
        async with stream:
            await handler(stream, log)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield port, log
        tg.cancel_scope.cancel()


def http_server(close_after_each: bool = False) -> Callable[[SocketStream, ServerLog], Any]:
    """An h11 server: 503 for /busy, 500 for /fail, 200 otherwise; maybe abrupt closes."""

    async def handler(stream: SocketStream, log: ServerLog) -> None:
        conn = h11.Connection(h11.SERVER)
        path = ""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    data = b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                path = event.target.decode()
            elif isinstance(event, h11.EndOfMessage):
                log.requests += 1
                status = {"/busy": 503, "/fail": 500}.get(path, 200)
                body = f"hello {path}".encode()
                out = conn.send(
                    h11.Response(status_code=status, headers=[("Content-Length", str(len(body)))])
                )
                out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
                out += conn.send(h11.EndOfMessage()) or b""
                await stream.send(out)
                if close_after_each or conn.our_state is not h11.DONE:
                    return  # abruptly, or as the client asked (Connection: close)
                conn.start_next_cycle()
            else:
                return

    return handler


@pytest.mark.anyio
async def test_http_target_keep_alive_reconnects_every_k() -> None:
    """Two clients x 10 GETs, reconnecting every 5: 4 connections; 503 refused, 500 error."""

    def path(client_id: int, seq: int) -> str:
        return {3: "/busy", 7: "/fail"}.get(seq, "/index.html")

    async with serving(http_server()) as (port, log):
        async with HttpTarget("127.0.0.1", port, path, requests_per_connection=5) as target:
            report = await closed_loop(target, clients=2, requests_per_client=10, think_time=0)
        assert (log.connections, log.requests) == (4, 20)
    assert target.connections == 4 and target.answered == 20
    assert report.client_ok == (8, 8) and report.fairness == 1.0
    assert report.refusals == {"HTTP 503": 2} and report.errors == {"HTTP 500": 2}
    assert target.bytes_received == sum(len(f"hello {path(0, s)}") for s in range(10)) * 2


@pytest.mark.anyio
async def test_http_target_retries_a_connection_the_server_closed() -> None:
    """A keep-alive connection closed by the server while idle is retried on a fresh one."""
    async with serving(http_server(close_after_each=True)) as (port, log):
        async with HttpTarget("127.0.0.1", port, requests_per_connection=None) as target:
            report = await closed_loop(target, clients=1, requests_per_client=4)
        assert log.requests == 4
    assert report.window.ok == 4 and report.errors == {}
    assert target.connections == 4


@pytest.mark.anyio
async def test_http_target_open_loop_and_connection_errors() -> None:
    """Concurrent open-loop requests open connections as needed; no server is an error."""
    async with serving(http_server()) as (port, log):
        async with HttpTarget("127.0.0.1", port) as target:
            report = await open_loop(target, 400, 0.05, poisson=False, clients=2)
        assert log.requests == 20
    assert report.samples is not None
    served = [s.client for s in report.samples.items if s.outcome is Outcome.OK]
    assert sorted(served) == [0] * 10 + [1] * 10
    async with HttpTarget("127.0.0.1", port, timeout=5) as closed_port:
        report = await closed_loop(closed_port, clients=1, requests_per_client=2)
    assert report.window.errors == 2 and report.window.ok == 0
    with pytest.raises(RuntimeError, match="closed"):
        await closed_port(0, 0)


@pytest.mark.anyio
async def test_tcp_target_request_reply() -> None:
    """A line protocol: replies classified, a connection per 2 requests."""

    async def line_server(stream: SocketStream, log: ServerLog) -> None:
        reader = BufferedByteReceiveStream(stream)
        while True:
            try:
                line = await reader.receive_until(b"\n", 1024)
            except (anyio.IncompleteRead, anyio.EndOfStream):
                return
            log.requests += 1
            await stream.send(b"BUSY\n" if line == b"busy" else b"ok " + line + b"\n")

    def request(client_id: int, seq: int) -> bytes:
        return b"busy\n" if seq == 2 else f"get {seq}\n".encode()

    def classify(reply: bytes) -> Outcome:
        return Outcome.REFUSED if reply == b"BUSY\n" else Outcome.OK

    async with serving(line_server) as (port, log):
        target = TcpTarget("127.0.0.1", port, request, classify=classify, requests_per_connection=2)
        async with target:
            report = await closed_loop(target, clients=1, requests_per_client=5)
        assert (log.connections, log.requests) == (3, 5)
    assert report.window.ok == 4 and report.window.refused == 1


# The public API and the documentation --------------------------------------------------------


def test_public_api_is_documented_and_reports_the_package() -> None:
    """Every name in aseda.bench.__all__ exists, is documented, and says aseda.bench."""
    import inspect

    import aseda.bench

    for name in aseda.bench.__all__:
        obj = getattr(aseda.bench, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and name != "LatencySummary":
            assert obj.__doc__, name
            assert obj.__module__ == "aseda.bench", name
    public = {n for n, v in vars(aseda.bench).items() if not n.startswith("_")}
    assert public - set(aseda.bench.__all__) == set()


def doc_blocks() -> list[str]:
    """The python code blocks of docs/benchmarking.md, in order."""
    text = (ROOT / "docs" / "benchmarking.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_docs_examples_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every python block of docs/benchmarking.md runs, in order, in one namespace."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "docs_benchmarking"}
    blocks = doc_blocks()
    assert len(blocks) >= 4
    for block in blocks:
        exec(compile(block, "docs/benchmarking.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "timeline" in out and "fairness" in out
    assert (tmp_path / "spike.json").exists() and (tmp_path / "spike.png").exists()

    async def haboob_against_test_server() -> Report:
        async with serving(http_server()) as (port, _log):
            report: Report = await namespace["haboob"]("127.0.0.1", port, clients=4, seconds=0.3)
        return report

    report = anyio.run(haboob_against_test_server)
    assert report.window.ok > 0 and report.window.errors == 0
