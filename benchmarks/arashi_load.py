"""The Arashi benchmark's load generator: closed-loop mail users over HTTP, in their own process.

Run by the driver (``python -m benchmarks.arashi``), which pins it to its own core; by hand::

    python -m benchmarks.arashi_load --url http://127.0.0.1:8000 --schedule 0:16 \\
        --duration 10 --out /tmp/samples.json

Each user is a task with its own keep-alive connection and session cookie. It logs in
(``POST /login``), then loops: think ``--think`` seconds (20 ms), choose its next request from the
mix below among the pages it has seen (the folder and message links parsed from the last pages),
send it and wait for the answer. A refused request (503) is retried after a back-off: the
``Retry-After`` the server sent, clamped to ``[--min-backoff, --max-backoff]``, or
``--backoff`` seconds when there is none, times a uniform factor in [0.8, 1.2] (``--jitter``:
people do not all press reload at the same instant, and users refused together would
otherwise come back together, in waves a second apart); the user neither thinks nor chooses
anew meanwhile, as a person pressing reload after "try again in a second" would.

The mix (weights out of 100 among the actions the user can take; an action it cannot take yet,
such as showing a message before having listed one, falls back to the page that would give it
one):

======== ====== =================================================================
show      36    ``GET /messages/ID``: reading mail is what webmail users mostly do
list      26    ``GET /folders/ID[?page=N]``: the folder listing that precedes reading
search    12    ``GET /search?q=WORD``, a word seen in a message read earlier
folders   10    ``GET /folders``: back to the folder list
delete     7    ``POST /messages/ID/delete``
refile     7    ``POST /messages/ID/refile`` to another folder
login      2    a new session: ``POST /login`` again (then ``GET /folders``, as after any login)
======== ====== =================================================================

Reads (show, list, search, folders) are 84 % and changes 14 %: the Arashi workload came from
Yahoo! Mail traces in which reading dominates; the exact trace is not public, so these weights
are this benchmark's own, chosen to keep reads dominant, to exercise every request type of the
service often enough to get a p90 of each in a 40-second window, and to delete slowly enough
that a mailbox is not emptied in a run.

Output: a JSON file with every request as ``[sent, latency, type, status, user, degraded,
backoff]`` (seconds from the start of the schedule; ``status`` 0 when the run ended before the
answer, -1 for a broken connection or a timeout), and, on stdout, one JSON progress line every
half second and ``{"done": ...}`` at the end.

The HTTP client is a small HTTP/1.1 client on asyncio streams (keep-alive, Content-Length and
chunked bodies) rather than httpx: in the spike a thousand users send up to a thousand requests a
second from one core, and httpx's cost per request would make the generator, not the service, the
bottleneck there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import itertools
import json
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urlsplit

#: Request types, in the order used by the samples' ``type`` index.
TYPES = ("login", "folders", "list", "show", "delete", "refile", "search")
#: The mix: weight of each action once logged in (login here is "start a new session").
MIX = {
    "show": 36,
    "list": 26,
    "search": 12,
    "folders": 10,
    "delete": 7,
    "refile": 7,
    "login": 2,
}
#: Search words used until the user has read a message to take words from.
DEFAULT_WORDS = ("meeting", "report", "project", "lunch", "invoice", "hello", "update", "travel")

_FOLDER_LINK = re.compile(r'href="/folders/([^"/?#]+)(?:\?page=(\d+))?"')
_MESSAGE_LINK = re.compile(r'href="/messages/([^"/?#]+)"')
_TAG = re.compile(r"<[^>]*>")
_WORD = re.compile(r"[A-Za-z]{4,12}")
_MAX_WORDS = 200


@dataclass
class Links:
    """What a page links to: folder ids (with the pages seen of each) and message ids."""

    folders: list[str] = field(default_factory=list)
    pages: dict[str, set[int]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def parse_links(page: str) -> Links:
    """Parse a page's folder and message links, in order of appearance, without repeats.

    ``href="/folders/ID"`` and ``href="/folders/ID?page=N"`` are folder links (the second also
    records page N of that folder), ``href="/messages/ID"`` message links; links to actions
    such as ``/messages/ID/delete`` are not message links.
    """
    links = Links()
    for match in _FOLDER_LINK.finditer(page):
        folder = html.unescape(match.group(1))
        if folder not in links.pages:
            links.folders.append(folder)
            links.pages[folder] = set()
        if match.group(2) is not None:
            links.pages[folder].add(int(match.group(2)))
    seen: set[str] = set()
    for match in _MESSAGE_LINK.finditer(page):
        message = html.unescape(match.group(1))
        if message not in seen:
            seen.add(message)
            links.messages.append(message)
    return links


def page_words(page: str) -> list[str]:
    """Lower-case words of 4 to 12 letters in a page's text (tags left out), for searches."""
    return [w.lower() for w in _WORD.findall(_TAG.sub(" ", page))]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds (a date or garbage gives None)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds == seconds else None


def backoff_for(
    retry_after: str | None, *, default: float, low: float, high: float, honour: bool = True
) -> float:
    """The back-off after a refusal: Retry-After clamped to [low, high], else ``default``."""
    seconds = parse_retry_after(retry_after) if honour else None
    if seconds is None:
        return default
    return min(high, max(low, seconds))


@dataclass
class UserState:
    """What one user knows: its session and the folders, messages and words it has seen."""

    user: int
    session: str | None = None
    folders: list[str] = field(default_factory=list)
    pages: dict[str, set[int]] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    message_folder: dict[str, str] = field(default_factory=dict)
    words: list[str] = field(default_factory=list)
    after_login: bool = False

    @property
    def name(self) -> str:
        return user_name(self.user)

    def learn(self, kind: str, page: str, folder: str | None = None) -> None:
        """Update what the user knows from a page it got for a request of type ``kind``."""
        links = parse_links(page)
        for f in links.folders:
            if f not in self.pages:
                self.folders.append(f)
                self.pages[f] = set()
            self.pages[f] |= links.pages[f]
        if kind == "folders" and links.folders:
            # The folder list is authoritative: folders it no longer shows are gone.
            keep = set(links.folders)
            self.folders = [f for f in self.folders if f in keep]
        if kind in ("list", "search") and links.messages:
            self.messages = list(links.messages)
            if kind == "list" and folder is not None:
                for m in links.messages:
                    self.message_folder[m] = folder
        elif kind == "list" and folder is not None:
            # An empty folder: forget the messages we thought were in it.
            self.messages = [m for m in self.messages if self.message_folder.get(m) != folder]
        if kind == "show":
            words = page_words(page)
            if words:
                self.words = (self.words + words)[-_MAX_WORDS:]

    def forget_message(self, message: str) -> None:
        """The message is gone (deleted, or 404): drop it from what the user knows."""
        self.messages = [m for m in self.messages if m != message]
        self.message_folder.pop(message, None)


def user_name(user: int) -> str:
    """The service's name for user number ``user``."""
    return f"user{user:05d}"


def choose_action(state: UserState, rng: random.Random) -> str:
    """The user's next request type: login without a session, folders right after a login,
    else drawn from :data:`MIX`, falling back to the page that makes the drawn one possible."""
    if state.session is None:
        return "login"
    if state.after_login:
        return "folders"
    action = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    if action in ("show", "delete") and not state.messages:
        action = "list"
    if action == "refile" and (not state.messages or len(state.folders) < 2):
        action = "list"
    if action == "list" and not state.folders:
        action = "folders"
    return action


@dataclass(frozen=True)
class Request:
    """One HTTP request of the mix."""

    kind: str
    method: str
    path: str
    form: dict[str, str] | None = None
    folder: str | None = None  # the folder listed (list), for what the page shows
    message: str | None = None  # the message acted on (show, delete, refile)


def build_request(action: str, state: UserState, rng: random.Random) -> Request:
    """The request for ``action`` (from :func:`choose_action`) given what the user knows."""
    if action == "login":
        form = {"user": state.name, "password": "pw-" + state.name}
        return Request("login", "POST", "/login", form)
    if action == "folders":
        return Request("folders", "GET", "/folders")
    if action == "list":
        folder = rng.choice(state.folders)
        pages = sorted(state.pages.get(folder, ()))
        path = f"/folders/{quote(folder, safe='')}"
        if pages and rng.random() < 0.25:
            path += f"?page={rng.choice(pages)}"
        return Request("list", "GET", path, folder=folder)
    if action == "search":
        word = rng.choice(state.words or DEFAULT_WORDS)
        return Request("search", "GET", "/search?" + urlencode({"q": word}))
    message = rng.choice(state.messages)
    path = f"/messages/{quote(message, safe='')}"
    if action == "show":
        return Request("show", "GET", path, message=message)
    if action == "delete":
        return Request("delete", "POST", path + "/delete", {}, message=message)
    if action == "refile":
        here = state.message_folder.get(message)
        choices = [f for f in state.folders if f != here] or state.folders
        target = rng.choice(choices)
        return Request("refile", "POST", path + "/refile", {"folder": target}, message=message)
    raise ValueError(f"unknown action {action!r}")


# --- the schedule -------------------------------------------------------------------------


def parse_schedule(text: str) -> list[tuple[float, int]]:
    """``"0:3,10:1000,30:3"`` -> [(0.0, 3), (10.0, 1000), (30.0, 3)]: from time t, n users."""
    steps: list[tuple[float, int]] = []
    for part in text.split(","):
        t, _, n = part.strip().partition(":")
        if not n:
            raise ValueError(f"schedule step {part!r} is not TIME:USERS")
        steps.append((float(t), int(n)))
    if not steps or steps[0][0] != 0:
        raise ValueError("a schedule starts at time 0")
    if any(b[0] <= a[0] for a, b in itertools.pairwise(steps)):
        raise ValueError("schedule times must increase")
    if any(n < 0 for _, n in steps):
        raise ValueError("user counts are >= 0")
    return steps


def users_at(schedule: Sequence[tuple[float, int]], t: float) -> int:
    """How many users the schedule wants active at time ``t``."""
    n = 0
    for start, users in schedule:
        if start <= t:
            n = users
        else:
            break
    return n


def start_times(schedule: Sequence[tuple[float, int]], ramp: float) -> dict[int, list[float]]:
    """For each user, the times it (re)starts: a step adding users starts them evenly over
    ``ramp`` seconds (0: all at once)."""
    starts: dict[int, list[float]] = {}
    before = 0
    for start, users in schedule:
        new = range(before, users)
        for k, user in enumerate(new):
            offset = ramp * k / len(new) if ramp > 0 else 0.0
            starts.setdefault(user, []).append(start + offset)
        before = users
    return starts


# --- a minimal HTTP/1.1 client --------------------------------------------------------------


class HttpError(Exception):
    """A broken connection or malformed answer."""


class Stale(HttpError):
    """The connection was closed before any byte of the answer came."""


#: What a request can fail with (a status of -1 in the samples).
FAILURES = (
    HttpError,
    OSError,
    ValueError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    asyncio.TimeoutError,
)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    cookies: dict[str, str]
    body: bytes


def parse_head(head: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, headers (lower-case names; repeated ones joined by ", ") and Set-Cookie values."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise HttpError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    cookies: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "set-cookie":
            cookie, _, _ = value.partition(";")
            key, _, val = cookie.partition("=")
            cookies[key.strip()] = val.strip()
        elif name in headers:
            headers[name] += ", " + value
        else:
            headers[name] = value
    return status, headers, cookies


class Connection:
    """One user's keep-alive connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, body: bytes = b"", cookie: str | None = None
    ) -> Answer:
        """Send one request; retried once on a fresh connection if a reused one turns out to
        have been closed by the server before answering (as browsers do)."""
        reused = self.writer is not None
        try:
            return await self._once(method, path, body, cookie)
        except Stale:
            await self.close()
            if not reused:
                raise
        except BaseException:
            await self.close()
            raise
        return await self._once(method, path, body, cookie)

    async def _once(self, method: str, path: str, body: bytes, cookie: str | None) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, limit=1 << 20
            )
        assert self.reader is not None
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "User-Agent: arashi-load",
            "Accept: text/html",
        ]
        if cookie is not None:
            lines.append(f"Cookie: session={cookie}")
        if method == "POST":
            lines.append("Content-Type: application/x-www-form-urlencoded")
            lines.append(f"Content-Length: {len(body)}")
        try:
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise Stale("connection closed before the answer") from None
            raise
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise Stale(str(exc)) from None
        status, headers, cookies = parse_head(head[:-4])
        data = await self._body(status, method, headers)
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, headers, cookies, data)

    async def _body(self, status: int, method: str, headers: dict[str, str]) -> bytes:
        assert self.reader is not None
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")  # no trailers expected
                    return b"".join(chunks)
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
        if "content-length" in headers:
            return await self.reader.readexactly(int(headers["content-length"]))
        data = await self.reader.read()  # delimited by the end of the connection
        await self.close()
        return data


# --- the users ------------------------------------------------------------------------------


@dataclass
class Config:
    host: str
    port: int
    schedule: list[tuple[float, int]]
    duration: float
    think: float = 0.020
    backoff: float = 1.0
    min_backoff: float = 0.1
    max_backoff: float = 5.0
    honour_retry_after: bool = True
    jitter: float = 0.2
    ramp: float = 0.0
    grace: float = 20.0
    timeout: float = 60.0
    seed: int = 1


class Run:
    """The shared state of one run: the clock, the samples and the live counts."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.t0 = 0.0
        self.samples: list[list[float | int]] = []
        self.sent = self.ok = self.refused = self.errors = 0
        self.in_flight = 0
        self.ending = False

    def now(self) -> float:
        return time.monotonic() - self.t0

    def active(self, user: int) -> bool:
        return not self.ending and users_at(self.config.schedule, self.now()) > user


def jittered(seconds: float, jitter: float, rng: random.Random) -> float:
    """``seconds`` times a uniform factor in [1 - jitter, 1 + jitter]: users refused at the same
    moment do not all come back at the same moment (their mean back-off is unchanged)."""
    return seconds * (1 + jitter * (2 * rng.random() - 1)) if jitter > 0 else seconds


async def user_task(run: Run, user: int, state: UserState, rng: random.Random) -> None:
    """One user, from its start until the schedule no longer wants it (or the run ends)."""
    cfg = run.config
    conn = Connection(cfg.host, cfg.port)
    try:
        while run.active(user):
            request = build_request(choose_action(state, rng), state, rng)
            body = urlencode(request.form).encode() if request.form is not None else b""
            while True:
                sent = run.now()
                run.sent += 1
                run.in_flight += 1
                degraded, wait, status = 0, 0.0, -1
                answer: Answer | None = None
                try:
                    answer = await asyncio.wait_for(
                        conn.request(request.method, request.path, body, state.session),
                        cfg.timeout,
                    )
                    status = answer.status
                except asyncio.CancelledError:
                    status = 0  # the run ended first
                    raise
                except FAILURES:
                    await conn.close()
                finally:
                    run.in_flight -= 1
                    latency = run.now() - sent
                    if answer is not None and answer.headers.get("x-aseda-degraded") == "1":
                        degraded = 1
                    if status == 503 and answer is not None:
                        wait = backoff_for(
                            answer.headers.get("retry-after"),
                            default=cfg.backoff,
                            low=cfg.min_backoff,
                            high=cfg.max_backoff,
                            honour=cfg.honour_retry_after,
                        )
                        wait = jittered(wait, cfg.jitter, rng)
                    kind = TYPES.index(request.kind)
                    run.samples.append([sent, latency, kind, status, user, degraded, wait])
                    if status == 503:
                        run.refused += 1
                    elif 200 <= status < 400:
                        run.ok += 1
                    else:
                        run.errors += 1
                if status != 503:
                    break
                await asyncio.sleep(wait)
                if not run.active(user):
                    return
            if answer is not None:
                absorb(state, request, answer)
            await asyncio.sleep(cfg.think)
    finally:
        await conn.close()


def absorb(state: UserState, request: Request, answer: Answer) -> None:
    """Update the user's state from the answer to its request."""
    status = answer.status
    if "session" in answer.cookies:
        state.session = answer.cookies["session"] or None
    if request.kind == "login":
        state.after_login = status == 303 and state.session is not None
        if status != 303:
            state.session = None
        return
    state.after_login = False
    location = urlsplit(answer.headers.get("location", "")).path
    if status == 401 or (status == 303 and location == "/login"):
        state.session = None  # no (longer a) session: log in again
        return
    if status == 404 and request.message is not None:
        state.forget_message(request.message)
        return
    if request.kind == "delete" and status < 400 and request.message is not None:
        state.forget_message(request.message)
    if request.kind == "refile" and status < 400 and request.message is not None:
        target = (request.form or {}).get("folder")
        if target is not None:
            state.message_folder[request.message] = target
    if status == 200:
        state.learn(request.kind, answer.body.decode("utf-8", "replace"), request.folder)


async def progress(run: Run, out: object) -> None:
    """A JSON line of live counts on stdout every half second, for the driver's progress bar."""
    while True:
        await asyncio.sleep(0.5)
        line = {
            "t": round(run.now(), 3),
            "sent": run.sent,
            "ok": run.ok,
            "refused": run.refused,
            "errors": run.errors,
            "in_flight": run.in_flight,
            "users": users_at(run.config.schedule, run.now()),
        }
        print(json.dumps(line), flush=True, file=out)  # type: ignore[call-overload]


async def run_users(config: Config, out: object = sys.stdout) -> Run:
    """Run the schedule: start each user at its start times, stop them when the schedule
    drops them, end everything after ``duration`` plus at most ``grace`` for answers."""
    run = Run(config)
    starts = start_times(config.schedule, config.ramp)
    states = {u: UserState(u) for u in starts}
    rngs = {u: random.Random(config.seed * 1_000_003 + u) for u in starts}
    events = sorted((t, u) for u, ts in starts.items() for t in ts)
    tasks: dict[int, asyncio.Task[None]] = {}
    run.t0 = time.monotonic()
    reporter = asyncio.create_task(progress(run, out))
    try:
        for t, user in events:
            if t >= config.duration:
                break
            delay = t - run.now()
            if delay > 0:
                await asyncio.sleep(delay)
            old = tasks.get(user)
            if old is not None and not old.done():
                continue  # still finishing its last request: it goes on as the same user
            tasks[user] = asyncio.create_task(user_task(run, user, states[user], rngs[user]))
        await asyncio.sleep(max(0.0, config.duration - run.now()))
        run.ending = True
        pending = [t for t in tasks.values() if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=config.grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for task in tasks.values():
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="the service, http://HOST:PORT")
    parser.add_argument("--schedule", required=True, help="users over time: 0:3,10:1000,30:3")
    parser.add_argument("--duration", type=float, required=True, help="seconds of load")
    parser.add_argument("--out", required=True, help="where to write the samples (JSON)")
    parser.add_argument("--think", type=float, default=0.020)
    parser.add_argument("--backoff", type=float, default=1.0, help="without Retry-After")
    parser.add_argument("--min-backoff", type=float, default=0.1)
    parser.add_argument("--max-backoff", type=float, default=5.0)
    parser.add_argument("--ignore-retry-after", action="store_true")
    parser.add_argument("--jitter", type=float, default=0.2, help="back-off x U(1 -/+ jitter)")
    parser.add_argument("--ramp", type=float, default=0.0, help="spread new users over seconds")
    parser.add_argument("--grace", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    config = Config(
        host=url.hostname or "127.0.0.1",
        port=url.port or 80,
        schedule=parse_schedule(args.schedule),
        duration=args.duration,
        think=args.think,
        backoff=args.backoff,
        min_backoff=args.min_backoff,
        max_backoff=args.max_backoff,
        honour_retry_after=not args.ignore_retry_after,
        jitter=args.jitter,
        ramp=args.ramp,
        grace=args.grace,
        timeout=args.timeout,
        seed=args.seed,
    )
    _raise_fd_limit()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dev dependency
        run = asyncio.run(run_users(config))
        loop_name = "asyncio"
    else:
        run = uvloop.run(run_users(config))
        loop_name = "uvloop"
    with open(args.out, "w") as f:
        json.dump({"types": TYPES, "loop": loop_name, "samples": run.samples}, f)
    done = {"done": True, "sent": run.sent, "ok": run.ok, "refused": run.refused}
    print(json.dumps(done | {"errors": run.errors}), flush=True)
    return 0


def _raise_fd_limit() -> None:
    """A thousand users need a thousand sockets: lift the soft limit to the hard one."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


if __name__ == "__main__":
    sys.exit(main())
