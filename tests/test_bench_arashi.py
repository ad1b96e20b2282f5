"""The Arashi benchmark's pure parts (user model, HTTP parsing, arithmetic) and a tiny end-to-end
run against the real service (benchmarks/arashi.py, benchmarks/arashi_load.py).

Timing targets live in the benchmark itself; nothing here depends on how fast anything runs.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import arashi
from benchmarks import arashi_load as load

FOLDERS_PAGE = """
<nav class="folders"><ul>
<li><a href="/folders/11">Inbox</a> (3)</li><li><a href="/folders/12">Sent</a></li>
</ul></nav>
<table><tr><td><a href="/folders/11">Inbox</a></td></tr>
<tr><td><a href="/folders/13">Archive</a></td></tr></table>
"""

FOLDER_PAGE = """
<nav class="folders"><ul><li><a href="/folders/11">Inbox</a></li>
<li><a href="/folders/12">Sent</a></li></ul></nav>
<table><tr><td><a href="/messages/101">Budget meeting</a></td></tr>
<tr><td><a href="/messages/102">Lunch</a></td></tr>
<tr><td><a href="/messages/101">Budget meeting</a></td></tr></table>
<a rel="next" href="/folders/11?page=1">Older</a>
"""

MESSAGE_PAGE = """
<nav class="folders"><ul><li><a href="/folders/11">Inbox</a></li></ul></nav>
<h1>Budget meeting</h1><p>Quarterly <b>budget</b> review tomorrow morning.</p>
<form method="post" action="/messages/101/refile"><select name="folder">
<option value="12">Sent</option></select></form>
<form method="post" action="/messages/101/delete"><button>Delete</button></form>
"""


# --- the user model -------------------------------------------------------------------------


def test_parse_links_finds_folders_pages_and_messages_once_each() -> None:
    links = load.parse_links(FOLDER_PAGE)
    assert links.folders == ["11", "12"]
    assert links.pages == {"11": {1}, "12": set()}
    assert links.messages == ["101", "102"]


def test_parse_links_ignores_action_urls() -> None:
    links = load.parse_links(MESSAGE_PAGE)
    assert links.messages == []  # /messages/101/refile and /delete are forms, not messages
    assert links.folders == ["11"]


def test_page_words_leaves_tags_out() -> None:
    words = load.page_words(MESSAGE_PAGE)
    assert "budget" in words and "quarterly" in words and "tomorrow" in words
    assert "href" not in words and "option" not in words


def test_retry_after_is_honoured_within_bounds() -> None:
    assert load.parse_retry_after("1") == 1.0
    assert load.parse_retry_after(" 0.5 ") == 0.5
    assert load.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert load.parse_retry_after("-1") is None
    assert load.parse_retry_after(None) is None
    kw = {"default": 1.0, "low": 0.1, "high": 5.0}
    assert load.backoff_for("2", **kw) == 2.0
    assert load.backoff_for("120", **kw) == 5.0
    assert load.backoff_for("0", **kw) == 0.1
    assert load.backoff_for(None, **kw) == 1.0
    assert load.backoff_for("3", honour=False, **kw) == 1.0


def test_jitter_spreads_the_back_off_around_its_mean() -> None:
    rng = random.Random(5)
    waits = [load.jittered(1.0, 0.2, rng) for _ in range(10_000)]
    assert 0.8 <= min(waits) < 0.81 and 1.19 < max(waits) <= 1.2
    assert sum(waits) / len(waits) == pytest.approx(1.0, abs=0.01)
    assert load.jittered(1.5, 0.0, rng) == 1.5


def _known() -> load.UserState:
    state = load.UserState(4, session="s")
    state.learn("folders", FOLDERS_PAGE)
    state.learn("list", FOLDER_PAGE, folder="11")
    return state


def test_choose_action_logs_in_first_then_lists_folders() -> None:
    rng = random.Random(1)
    state = load.UserState(0)
    assert load.choose_action(state, rng) == "login"
    state.session, state.after_login = "s", True
    assert load.choose_action(state, rng) == "folders"


def test_choose_action_falls_back_to_the_page_that_makes_an_action_possible() -> None:
    rng = random.Random(2)
    nothing = load.UserState(0, session="s")
    assert {load.choose_action(nothing, rng) for _ in range(300)} <= {"folders", "search", "login"}
    folders_only = load.UserState(0, session="s", folders=["11", "12"], pages={"11": set()})
    drawn = {load.choose_action(folders_only, rng) for _ in range(300)}
    assert "list" in drawn and not drawn & {"show", "delete", "refile"}


def test_choose_action_follows_the_mix() -> None:
    rng = random.Random(3)
    state = _known()
    counts = Counter(load.choose_action(state, rng) for _ in range(20_000))
    assert set(counts) == set(load.MIX)
    total = sum(load.MIX.values())
    for action, weight in load.MIX.items():
        assert abs(counts[action] / 20_000 - weight / total) < 0.015, action
    reads = sum(counts[a] for a in ("show", "list", "search", "folders"))
    assert reads / 20_000 > 0.8


def test_learn_tracks_folders_messages_and_words() -> None:
    state = _known()
    assert state.folders == ["11", "12", "13"]
    assert state.pages["11"] == {1}
    assert state.messages == ["101", "102"]
    assert state.message_folder == {"101": "11", "102": "11"}
    state.learn("show", MESSAGE_PAGE)
    assert "budget" in state.words
    state.learn("folders", '<a href="/folders/11">Inbox</a>')
    assert state.folders == ["11"]  # the folder list is authoritative


def test_build_request_for_each_action() -> None:
    rng = random.Random(4)
    state = _known()
    login = load.build_request("login", state, rng)
    assert (login.method, login.path, login.form) == (
        "POST",
        "/login",
        {"user": "user00004", "password": "pw-user00004"},
    )
    assert load.build_request("folders", state, rng).path == "/folders"
    lists = {load.build_request("list", state, rng).path for _ in range(200)}
    assert "/folders/11?page=1" in lists and lists <= {
        "/folders/11",
        "/folders/11?page=1",
        "/folders/12",
        "/folders/13",
    }
    show = load.build_request("show", state, rng)
    assert show.method == "GET" and show.path in ("/messages/101", "/messages/102")
    delete = load.build_request("delete", state, rng)
    assert delete.method == "POST" and delete.path.endswith("/delete")
    for _ in range(50):
        refile = load.build_request("refile", state, rng)
        assert refile.form is not None and refile.form["folder"] in ("12", "13")
    state.words = ["o'brien & co"]
    assert load.build_request("search", state, rng).path == "/search?q=o%27brien+%26+co"


def _answer(status: int, body: str = "", **headers: str) -> load.Answer:
    cookies = {}
    if "cookie" in headers:
        cookies["session"] = headers.pop("cookie")
    return load.Answer(status, headers, cookies, body.encode())


def test_absorb_updates_the_session_and_the_mailbox() -> None:
    state = load.UserState(2)
    login = load.Request("login", "POST", "/login", {})
    load.absorb(state, login, _answer(303, location="/folders", cookie="tok"))
    assert state.session == "tok" and state.after_login
    load.absorb(state, load.Request("folders", "GET", "/folders"), _answer(200, FOLDERS_PAGE))
    assert not state.after_login and state.folders == ["11", "12", "13"]
    load.absorb(
        state, load.Request("list", "GET", "/folders/11", folder="11"), _answer(200, FOLDER_PAGE)
    )
    delete = load.Request("delete", "POST", "/messages/101/delete", {}, message="101")
    load.absorb(state, delete, _answer(303, location="/folders/11"))
    assert state.messages == ["102"]
    gone = load.Request("show", "GET", "/messages/102", message="102")
    load.absorb(state, gone, _answer(404, "not found"))
    assert state.messages == []
    load.absorb(state, load.Request("folders", "GET", "/folders"), _answer(303, location="/login"))
    assert state.session is None
    load.absorb(state, login, _answer(401, "bad"))
    assert state.session is None and not state.after_login


def test_schedule_parsing_and_users_over_time() -> None:
    steps = load.parse_schedule("0:3, 10:1000,30:3")
    assert steps == [(0.0, 3), (10.0, 1000), (30.0, 3)]
    assert [load.users_at(steps, t) for t in (0, 9.99, 10, 29.9, 30, 99)] == [
        3,
        3,
        1000,
        1000,
        3,
        3,
    ]
    for bad in ("", "1:3", "0:3,0:4", "0:3,5", "0:-1"):
        with pytest.raises(ValueError, match=r"schedule|time|user|invalid literal"):
            load.parse_schedule(bad)
    starts = load.start_times([(0.0, 4), (10.0, 6)], ramp=2.0)
    assert starts == {0: [0.0], 1: [0.5], 2: [1.0], 3: [1.5], 4: [10.0], 5: [11.0]}
    assert load.start_times([(0.0, 2)], ramp=0) == {0: [0.0], 1: [0.0]}


def test_parse_head() -> None:
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nVary: accept\r\n"
        b"vary: cookie\r\nSet-Cookie: session=abc; HttpOnly; Path=/"
    )
    status, headers, cookies = load.parse_head(head)
    assert status == 503
    assert headers == {"retry-after": "1", "vary": "accept, cookie"}
    assert cookies == {"session": "abc"}
    with pytest.raises(load.HttpError):
        load.parse_head(b"garbage")


def test_connection_reads_every_body_framing_and_reconnects_when_closed() -> None:
    """The client against a real socket server: Content-Length, chunked, close-delimited,
    and a keep-alive connection the server closed (the request goes again on a new one)."""
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        None,  # close the connection without answering
        b"HTTP/1.1 303 See Other\r\nLocation: /folders\r\nSet-Cookie: session=t\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    ]
    got: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while replies:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")]
            body = await reader.readexactly(int(length[0].split(b":")[1])) if length else b""
            got.append(head.split(b"\r\n")[0] + b" " + body)
            reply = replies.pop(0)
            if reply is None:
                break
            writer.write(reply)
            if b"Connection: close" in reply:
                break
        writer.close()

    async def main() -> list[load.Answer]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = load.Connection("127.0.0.1", port)
        try:
            out = [await conn.request("GET", "/a"), await conn.request("GET", "/b")]
            out.append(await conn.request("POST", "/login", b"user=u", cookie="x"))
            out.append(await conn.request("GET", "/c"))
        finally:
            await conn.close()
            server.close()
            await server.wait_closed()
        return out

    a, b, c, d = asyncio.run(main())
    assert (a.status, a.body) == (200, b"hello")
    assert (b.status, b.body) == (200, b"abcde")
    assert (c.status, c.cookies, c.headers["location"]) == (303, {"session": "t"}, "/folders")
    assert d.body == b"until the end"
    assert got == [
        b"GET /a HTTP/1.1 ",
        b"GET /b HTTP/1.1 ",
        b"POST /login HTTP/1.1 user=u",  # on the connection the server then closed
        b"POST /login HTTP/1.1 user=u",  # sent again on a fresh one
        b"GET /c HTTP/1.1 ",
    ]


# --- the driver's arithmetic ----------------------------------------------------------------


def test_percentile_by_nearest_rank() -> None:
    values = list(range(1, 11))
    assert arashi.percentile(values, 90) == 9
    assert arashi.percentile(values, 50) == 5
    assert arashi.percentile(values, 100) == 10
    assert arashi.percentile([3.0], 90) == 3.0
    assert math.isnan(arashi.percentile([], 90))


def test_minimum_refused_share() -> None:
    # The service keeps up at the target: nothing need be refused.
    assert arashi.min_refused_share(100, 0.02, 1.0, capacity=100, refused_cycle=1.0) == 0.0
    # 128 users, 64 served/s at 1.02 s each: 62.72 users too many.
    n, z, t, c = 128, 0.02, 1.0, 64.0
    excess = n - c * (z + t)
    assert arashi.min_refused_share(n, z, t, c, 2.0) == pytest.approx(excess / (excess + c * 2))
    # A refused user that comes back as late as a served one: 1 - C / X_T.
    xt = arashi.offered_at_target(n, z, t)
    assert xt == pytest.approx(128 / 1.02)
    assert arashi.min_refused_share(n, z, t, c, z + t) == pytest.approx(1 - c / xt)
    # Instant retries: nearly everything is refused.
    assert arashi.min_refused_share(n, z, t, c, 0.0) == 1.0
    # The share it gives is exactly the one that serves C/s.
    f = arashi.min_refused_share(n, z, t, c, 1.3)
    assert (1 - f) * n / ((1 - f) * (z + t) + f * 1.3) == pytest.approx(c)


def _s(
    sent: float, latency: float, kind: str, status: int, user: int = 0, **kw: float
) -> list[float]:
    return [
        sent,
        latency,
        load.TYPES.index(kind),
        status,
        user,
        kw.get("deg", 0),
        kw.get("wait", 0),
    ]


def test_stats_by_type_and_class() -> None:
    samples = [
        _s(0.1, 0.2, "show", 200, 0),
        _s(0.2, 0.4, "show", 200, 1, deg=1),
        _s(0.3, 0.01, "show", 503, 1, wait=1.0),
        _s(0.4, 0.03, "search", 503, 3, wait=2.0),
        _s(0.5, 0.1, "login", 303, 2),
        _s(0.6, 0.1, "delete", 404, 2),
        _s(0.7, 5.0, "list", 0, 0),
    ]
    types = arashi.by_type(samples, seconds=2.0)
    assert list(types) == ["login", "list", "show", "delete", "search", "all"]
    show = types["show"]
    assert (show.requests, show.served, show.refused, show.degraded) == (3, 2, 1, 1)
    assert show.p90 == 0.4 and show.refused_share == pytest.approx(1 / 3)
    assert types["all"].errors == 2
    assert types["all"].served_rate == 1.5
    assert types["all"].refused_cycle == pytest.approx((1.01 + 2.03) / 2)
    classes = arashi.by_class(samples, seconds=2.0)
    assert classes[0].requests == 4 and classes[0].refused == 0
    assert classes[1].requests == 3 and classes[1].refused == 2
    assert arashi.in_window(samples, 0.2, 0.5) == samples[1:4]


def test_windows_count_requests_where_they_ended() -> None:
    samples = [
        _s(0.0, 0.3, "show", 200),  # ends at 0.3: window 0
        _s(0.1, 0.6, "show", 200),  # ends at 0.7: window 1
        _s(0.6, 0.1, "show", 503),  # ends at 0.7: window 1
        _s(0.9, 0.05, "list", 500),  # ends at 0.95: window 1
        _s(1.4, 0.5, "show", 200),  # ends at 1.9: past the end
    ]
    tl = arashi.windows(samples, 0.0, 1.5, 0.5)
    assert [w.start for w in tl] == [0.0, 0.5, 1.0]
    assert [(w.admitted, w.refused, w.errors) for w in tl] == [(1, 0, 0), (1, 1, 1), (0, 0, 0)]
    assert tl[0].p90 == 0.3 and tl[1].p90 == 0.6 and math.isnan(tl[2].p90)


def test_recovery_after_a_jump() -> None:
    def tl(p90s: list[float]) -> list[arashi.Window]:
        return [arashi.Window(10 + 0.5 * k, admitted=1, p90=p) for k, p in enumerate(p90s)]

    # Never over: recovered at once; only the first window over: 0.5 s; a later one counts.
    assert arashi.recovery(tl([0.5, 0.8, 0.9]), 10, 11.5, 1.0, 0.5) == (0.0, 0.9, 0, 3)
    assert arashi.recovery(tl([1.8, 0.9, 0.7]), 10, 11.5, 1.0, 0.5) == (0.5, 1.8, 1, 3)
    assert arashi.recovery(tl([1.8, 0.9, 1.2, 0.7]), 10, 12, 1.0, 0.5) == (1.5, 1.8, 2, 4)
    # A window with nobody answered is over; windows outside [jump, drop) do not count.
    assert arashi.recovery(tl([0.2, math.nan]), 10, 11, 1.0, 0.5) == (1.0, 0.2, 1, 2)
    assert arashi.recovery(tl([0.2, 0.3, 5.0]), 10, 11, 1.0, 0.5) == (0.0, 0.3, 0, 2)


def test_only_and_quick_settings() -> None:
    assert arashi.parse_only(None) == list(arashi.SCENARIOS)
    assert arashi.parse_only("spike, figure") == ["figure", "spike"]
    with pytest.raises(SystemExit):
        arashi.parse_only("figure,nope")


def test_docs_examples_run() -> None:
    """The python blocks of docs/arashi-benchmark.md run, in order, in one namespace."""
    text = (Path(arashi.REPO) / "docs" / "arashi-benchmark.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    namespace: dict[str, object] = {"__name__": "docs_arashi_benchmark"}
    for block in blocks:
        exec(compile(block, "docs/arashi-benchmark.md", "exec"), namespace)


# --- end to end -----------------------------------------------------------------------------


def _service_missing() -> str | None:
    """Why the service cannot run yet (it and aseda.asgi are written alongside), or None."""
    try:
        from aseda.asgi import Conditioned  # noqa: F401

        importlib.import_module("examples.arashi.conditioning")
    except Exception as exc:
        return f"examples/arashi or aseda.asgi is not importable yet: {exc!r}"
    return None


_MISSING = _service_missing()


@pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")
def test_two_users_against_the_service(tmp_path: Path) -> None:
    """Two users for a second and a half against a real service subprocess: they log in, list
    folders and go on through the mix, and every request is answered."""
    settings = arashi.Settings(target=1.0, pin=False, progress=False, out=tmp_path, ramp=0.0)

    class Quiet:
        is_terminal = False

    bench = arashi.Bench(settings, Quiet())
    case = bench.run(
        "e2e",
        bench.server_args(2, "aimd", "--messages", "30"),
        [(0.0, 2)],
        1.5,
        0.0,
    )
    assert case.startup > 0 and case.exit_code == 0
    kinds = [load.TYPES[int(s[arashi.TYPE])] for s in case.samples]
    statuses = {load.TYPES[int(s[arashi.TYPE])]: int(s[arashi.STATUS]) for s in case.samples}
    users = {int(s[arashi.USER]) for s in case.samples}
    assert users == {0, 1}
    assert kinds.count("login") >= 2 and kinds.count("folders") >= 2
    assert statuses["login"] == 303 and statuses["folders"] == 200
    assert len(kinds) > 10
    bad = [s for s in case.samples if not 200 <= s[arashi.STATUS] < 400]
    assert bad == []
    assert (tmp_path / "arashi-logs" / "e2e.log").exists()
