"""``aseda top URL``: a live terminal table of every stage, read from a stats endpoint.

The endpoint is the JSON one :func:`aseda.serve_stats` serves. Rendering needs rich
(``pip install aseda[top]``); fetching uses only the standard library.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult

__all__ = ["FetchError", "fetch_stats", "render_frame", "run_top"]

_MISSING = "aseda top needs rich: pip install 'aseda[top]'"
_MAX_BODY = 32 * 1024 * 1024
_BAR = 6  # characters of the queue bar
_sleep = time.sleep  # replaced in tests


class FetchError(Exception):
    """The stats endpoint could not be read, or did not answer a stats snapshot."""


def normalize_url(url: str) -> str:
    """Complete a URL given loosely: ``host:port`` means ``http://host:port/stats``."""
    if "://" not in url:
        url = f"http://{url}"
    parts = urllib.parse.urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/stats")
    return urllib.parse.urlunsplit(parts)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetch_stats(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """GET a stats snapshot and decode it.

    Raises:
        FetchError: unreachable, an HTTP error, a timeout, or not a stats snapshot.
    """
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "aseda-top"}
    )
    handlers: list[urllib.request.BaseHandler] = []
    if _is_loopback(urllib.parse.urlsplit(url).hostname):
        handlers.append(urllib.request.ProxyHandler({}))  # never proxy a local endpoint
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(_MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(200).decode("utf-8", "replace").strip().splitlines()
        reason = f": {detail[0]}" if detail else ""
        raise FetchError(f"{url} answered HTTP {exc.code} {exc.reason}{reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot reach {url}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise FetchError(f"cannot read {url}: {exc or type(exc).__name__}") from None
    if len(body) > _MAX_BODY:
        raise FetchError(f"{url} answered more than {_MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        raise FetchError(f"{url} did not answer JSON; is it an aseda /stats endpoint?") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), list):
        raise FetchError(f"{url} did not answer an aseda stats snapshot (no 'stages' list)")
    return data


# Rendering --------------------------------------------------------------------------------


class _Bar:
    """A queue's fill level: ``███···`` (``###...`` on an ASCII-only console)."""

    def __init__(self, fraction: float, style: str) -> None:
        self.fraction = min(1.0, max(0.0, fraction))
        self.style = style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.segment import Segment
        from rich.style import Style

        full = round(self.fraction * _BAR)
        if self.fraction > 0 and full == 0:
            full = 1  # a non-empty queue always shows
        fill, rest = ("#", ".") if options.ascii_only else ("█", "·")
        yield Segment(fill * full, Style.parse(self.style))
        yield Segment(rest * (_BAR - full), Style.parse("dim"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if value == "inf":
            return math.inf
        return None
    return float(value)


def _count(stage: Mapping[str, Any], key: str) -> int:
    value = _number(stage.get(key))
    return int(value) if value is not None and math.isfinite(value) else 0


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _fmt_ms(seconds: Any) -> str:
    value = _number(seconds)
    if value is None or not math.isfinite(value):
        return "-"
    ms = value * 1000
    if ms < 1:
        return f"{ms:.2f}"
    if ms < 10:
        return f"{ms:.1f}"
    return f"{ms:,.0f}"


def _fmt_elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _bottleneck(snapshot: Mapping[str, Any]) -> tuple[str, str] | None:
    """The bottleneck stage's name and why, if the snapshot names one (a name or a dict)."""
    value = snapshot.get("bottleneck")
    if isinstance(value, str) and value:
        return value, ""
    if isinstance(value, Mapping):
        name = value.get("stage", value.get("name"))
        reason = value.get("reason")
        return (str(name), str(reason) if reason else "") if name else None
    return None


def _stages(snapshot: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    stages = snapshot.get("stages")
    if isinstance(stages, list):
        yield from (s for s in stages if isinstance(s, Mapping))


def render_frame(
    snapshot: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    elapsed: float,
    *,
    title: str | None = None,
) -> RenderableType:
    """One frame of ``aseda top``: a table with a row per stage, and a footer.

    Args:
        snapshot: the stats JSON (``GET /stats``).
        previous: the snapshot before it, or None for the first frame: the admitted and
            processed columns then show totals instead of rates.
        elapsed: seconds between ``previous`` and ``snapshot``, for the rates; used when the
            snapshots carry no ``time`` of their own.
        title: a title above the table.

    Returns:
        A rich renderable (print it with a rich Console): the title, the table (the
        bottleneck's row marked ``*``) and a footer with the state, the run's elapsed time
        and the bottleneck, when the snapshot has them.
    """
    try:
        from rich import box
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text
    except ImportError as exc:
        raise ImportError(_MISSING) from exc

    interval = elapsed
    if previous is not None:
        now, before = _number(snapshot.get("time")), _number(previous.get("time"))
        if now and before and now > before:
            interval = now - before
    rates = previous is not None and interval > 0
    before_by_name = {str(s.get("name")): s for s in _stages(previous or {})}
    bottleneck = _bottleneck(snapshot)

    table = Table(
        box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False, show_edge=False
    )
    table.add_column("stage", no_wrap=True)
    table.add_column("queue", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True, width=_BAR)
    table.add_column("workers", justify="right", no_wrap=True)
    table.add_column("admitted/s" if rates else "admitted", justify="right", no_wrap=True)
    table.add_column("processed/s" if rates else "processed", justify="right", no_wrap=True)
    table.add_column("refused", justify="right", no_wrap=True)
    table.add_column("failed", justify="right", no_wrap=True)
    table.add_column("in flight", justify="right", no_wrap=True)
    table.add_column("p50/p90/p99 ms", justify="right", no_wrap=True)

    for stage in _stages(snapshot):
        name = str(stage.get("name", "?"))
        length = _count(stage, "queue_length")
        capacity = _number(stage.get("capacity"))
        bar: RenderableType
        if capacity is None or not math.isfinite(capacity) or capacity <= 0:
            queue, bar = f"{length}/inf", Text("")
        else:
            fraction = length / capacity
            style = "red" if fraction >= 0.9 else "yellow" if fraction >= 0.5 else "green"
            queue, bar = f"{length}/{int(capacity)}", _Bar(fraction, style)
        workers = f"{_count(stage, 'workers')}"
        if _count(stage, "workers_max") > _count(stage, "workers_min"):
            workers += f"/{_count(stage, 'workers_max')}"
        flow = []
        for key in ("admitted", "processed"):
            total = _count(stage, key)
            old = before_by_name.get(name)
            if rates and old is not None and total >= _count(old, key):
                flow.append(_fmt_rate((total - _count(old, key)) / interval))
            else:
                flow.append(f"{total:,}")
        refused = _count(stage, "rejected") + _count(stage, "shed")
        failed = _count(stage, "failed")
        response = stage.get("response")
        response = response if isinstance(response, Mapping) else {}
        latency = "/".join(_fmt_ms(response.get(q)) for q in ("p50", "p90", "p99"))
        is_bottleneck = bottleneck is not None and name == bottleneck[0]
        table.add_row(
            Text(name + (" *" if is_bottleneck else ""), style="bold red" if is_bottleneck else ""),
            Text(queue),
            bar,
            Text(workers),
            Text(flow[0]),
            Text(flow[1]),
            Text(f"{refused:,}", style="yellow" if refused else ""),
            Text(f"{failed:,}", style="red" if failed else ""),
            Text(f"{_count(stage, 'in_flight'):,}"),
            Text(latency),
        )

    footer = [f"state: {snapshot.get('state', '?')}"]
    lines: list[RenderableType] = []
    run_time = _number(snapshot.get("elapsed"))
    if run_time:
        footer.append(f"elapsed: {_fmt_elapsed(run_time)}")
    if bottleneck is not None:
        slow, why = bottleneck
        lines.append(Text(f"bottleneck: {slow}: {why}" if why else f"bottleneck: {slow}"))
    abandoned = _count(snapshot, "abandoned")
    if abandoned:
        footer.append(f"abandoned: {abandoned:,}")
    if rates:
        span = f"{interval:.1f}s" if interval >= 1 else f"{interval * 1000:.0f}ms"
        footer.append(f"rates over {span}")
    else:
        footer.append("totals since start")
    parts: list[RenderableType] = [table, Text("   ".join(footer)), *lines]
    if title:
        parts.insert(0, Text(title, style="bold"))
    return Group(*parts)


# The command ------------------------------------------------------------------------------


def _console() -> Console:
    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=120)  # a pipe or a file: no reason to wrap at 80
    return console


def run_top(
    url: str,
    interval: float = 1.0,
    once: bool = False,
    *,
    timeout: float = 5.0,
    console: Console | None = None,
    max_frames: int | None = None,
) -> int:
    """Show every stage of a running graph, refreshed every ``interval`` seconds.

    Args:
        url: the JSON stats endpoint (``host:port`` is completed to
            ``http://host:port/stats``).
        interval: seconds between refreshes.
        once: print a single frame (totals, not rates) and return.
        timeout: seconds to wait for each answer.
        console: the rich Console to draw on (stdout's by default).
        max_frames: stop after this many frames (for scripts and tests; None: until Ctrl-C).

    Returns:
        The exit code: 0, or 2 if the endpoint cannot be read at first (an error is printed
        on stderr) or an argument is wrong. Ctrl-C exits with 0.
    """
    if not (math.isfinite(interval) and interval > 0):
        print(f"aseda top: --interval must be a positive number, not {interval}", file=sys.stderr)
        return 2
    try:
        import rich
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text
    except ImportError:
        print(f"aseda top: {_MISSING}", file=sys.stderr)
        return 2
    del rich
    url = normalize_url(url)
    title = f"aseda top  {url}"
    try:
        try:
            snapshot = fetch_stats(url, timeout)
        except FetchError as exc:
            print(f"aseda top: {exc}", file=sys.stderr)
            return 2
        out = console if console is not None else _console()
        taken = time.monotonic()
        if once:
            out.print(render_frame(snapshot, None, 0.0, title=title))
            return 0
        frame: RenderableType = render_frame(snapshot, None, 0.0, title=title)
        frames = 1
        with Live(frame, console=out, auto_refresh=False, redirect_stdout=False) as live:
            live.refresh()
            while max_frames is None or frames < max_frames:
                _sleep(max(0.0, interval - (time.monotonic() - taken)))
                started = time.monotonic()
                try:
                    current = fetch_stats(url, timeout)
                except FetchError as exc:
                    note = Text(f"{exc}; retrying every {interval:g}s", style="bold red")
                    live.update(Group(frame, note), refresh=True)
                else:
                    frame = render_frame(current, snapshot, started - taken, title=title)
                    snapshot, taken = current, started
                    live.update(frame, refresh=True)
                frames += 1
    except KeyboardInterrupt:
        return 0
    return 0
