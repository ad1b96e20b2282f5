"""Arashi, the overload-controlled mail service (examples/arashi), end to end.

Most tests run the app in process (httpx's ASGITransport, ``async with app.run()``) on
asyncio, trio and uvloop; the real-socket tests run it under uvicorn and hypercorn, and the
command line as a subprocess. The PostgreSQL tests (tests/test_arashi_postgres.py) start a
server when the machine has one installed.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")
pytest.importorskip("multipart")
aseda_asgi = pytest.importorskip("aseda.asgi")

from examples.arashi import db  # noqa: E402
from examples.arashi.conditioning import Arashi, Settings  # noqa: E402

pytestmark = pytest.mark.anyio

FOLDER_LINK = re.compile(r'href="/folders/(\d+)"')
MESSAGE_LINK = re.compile(r'href="/messages/(\d+)"')
BASE = "http://arashi.test"


def settings(tmp_path: Path, db_url: str | None = None, **overrides: Any) -> Settings:
    """A small corpus and the bare templates: tests check behaviour, not capacity."""
    values: dict[str, Any] = {
        "db": db_url or f"sqlite:{tmp_path / 'mail.sqlite'}",
        "users": 4,
        "messages": 60,
        "render_cost": 1,
        "control": "aimd",
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def service(s: Settings) -> Iterator[Arashi]:
    arashi = Arashi(s)
    try:
        yield arashi
    finally:
        arashi.close()


@asynccontextmanager
async def running(s: Settings) -> AsyncIterator[tuple[Arashi, httpx.AsyncClient]]:
    """The service running in process, and a client without a session."""
    with service(s) as arashi:
        async with arashi.app.run():
            transport = httpx.ASGITransport(app=arashi.app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                yield arashi, client


def client_for(arashi: Arashi) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=arashi.app), base_url=BASE)


async def login(client: httpx.AsyncClient, i: int) -> None:
    r = await client.post("/login", data={"user": db.user_name(i), "password": db.user_password(i)})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/folders"
    assert client.cookies.get("session")


def sql(arashi: Arashi, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the database directly, to check what the service did."""
    if arashi.database.dialect == "postgresql":
        import psycopg

        with psycopg.connect(arashi.database.target) as pg:
            return [tuple(r) for r in pg.execute(query.replace("?", "%s"), params).fetchall()]
    conn = sqlite3.connect(arashi.database.target)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


# --- PostgreSQL, when the machine has it --------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of our own in a temporary directory: its base DSN."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed here (no initdb and pg_ctl on PATH)")
    pytest.importorskip("psycopg")
    base = tempfile.mkdtemp(prefix="arashi-pg-")
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        as_user = ["runuser", "-u", "nobody", "--"]
        shutil.chown(base, "nobody")
    data = os.path.join(base, "data")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
    try:
        run([*as_user, initdb, "-D", data, "-U", "arashi", "--auth=trust", "-E", "UTF8", "-N"])
        options = f"-p {port} -h 127.0.0.1 -k {base} -F -c max_connections=200"
        run([*as_user, pg_ctl, "-D", data, "-o", options, "-l", f"{base}/log", "-w", "start"])
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {exc}")
    try:
        yield f"postgresql://arashi@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'mail.sqlite'}"
    import psycopg

    base = request.getfixturevalue("postgres")
    name = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as pg:
        pg.execute(f"CREATE DATABASE {name}")  # a fresh name of our own making, not input
    return f"{base}/{name}"


def user_id(i: int) -> int:
    return i + 1  # the corpus numbers users from 1


def folders_of(arashi: Arashi, i: int) -> dict[str, int]:
    rows = sql(arashi, "SELECT name, id FROM folders WHERE user_id = ?", (user_id(i),))
    return dict(rows)


def messages_in(arashi: Arashi, folder_id: int) -> set[int]:
    return {r[0] for r in sql(arashi, "SELECT id FROM messages WHERE folder_id = ?", (folder_id,))}


def consistent(arashi: Arashi) -> None:
    """Every folder's counters match its messages, every message is in its owner's folder."""
    rows = sql(
        arashi,
        "SELECT f.id, f.total, f.unread, count(m.id), coalesce(sum(m.unread), 0) "
        "FROM folders f LEFT JOIN messages m ON m.folder_id = f.id GROUP BY f.id",
    )
    for fid, total, unread, count, unread_count in rows:
        assert (total, unread) == (count, unread_count), f"folder {fid}"
    assert (
        sql(
            arashi,
            "SELECT m.id FROM messages m JOIN folders f ON f.id = m.folder_id "
            "WHERE f.user_id != m.user_id",
        )
        == []
    )


# --- each request type -----------------------------------------------------------------------


async def test_every_request_type(tmp_path: Path, db_url: str) -> None:
    async with running(settings(tmp_path, db_url)) as (arashi, client):
        r = await client.get("/login")
        assert r.status_code == 200 and 'action="/login"' in r.text
        await login(client, 0)
        folders = folders_of(arashi, 0)

        r = await client.get("/folders")
        assert r.status_code == 200
        assert {int(f) for f in FOLDER_LINK.findall(r.text)} == set(folders.values())

        inbox = folders["Inbox"]
        r = await client.get(f"/folders/{inbox}")
        assert r.status_code == 200 and "X-Aseda-Degraded" not in r.headers
        listed = [int(m) for m in MESSAGE_LINK.findall(r.text)]
        assert 0 < len(listed) <= db.PAGE_SIZE
        assert set(listed) <= messages_in(arashi, inbox)
        assert 'class="preview"' in r.text

        page2 = await client.get(f"/folders/{inbox}?page=1")
        assert page2.status_code == 200
        assert not set(listed) & {int(m) for m in MESSAGE_LINK.findall(page2.text)}

        target = listed[0]
        subject = sql(arashi, "SELECT subject FROM messages WHERE id = ?", (target,))[0][0]
        r = await client.get(f"/messages/{target}")
        assert r.status_code == 200 and subject in r.text
        assert f'action="/messages/{target}/refile"' in r.text
        assert sql(arashi, "SELECT unread FROM messages WHERE id = ?", (target,)) == [(0,)]

        word = subject.split()[0].lower()
        r = await client.get("/search", params={"q": word})
        assert r.status_code == 200
        found = {int(m) for m in MESSAGE_LINK.findall(r.text)}
        assert target in found or len(found) == db.SEARCH_LIMIT
        assert found <= {m[0] for m in sql(arashi, "SELECT id FROM messages WHERE user_id = 1")}

        archive = folders["Archive"]
        r = await client.post(f"/messages/{target}/refile", data={"folder": str(archive)})
        assert r.status_code == 303 and r.headers["location"] == f"/folders/{inbox}"
        assert target in messages_in(arashi, archive)

        r = await client.post(f"/messages/{target}/delete")
        assert r.status_code == 303 and r.headers["location"] == f"/folders/{archive}"
        assert sql(arashi, "SELECT id FROM messages WHERE id = ?", (target,)) == []
        assert (await client.get(f"/messages/{target}")).status_code == 404
        consistent(arashi)

        r = await client.post("/logout")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        r = await client.get("/folders")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        stats = arashi.app.running.stats()
        for name in ("login", "logout", "list_folders", "list_messages", "show", "search"):
            assert stats[name].processed >= 1, name
        for name in ("delete", "refile"):
            assert stats[name].processed == 1, name


async def test_bad_login_is_401(tmp_path: Path) -> None:
    async with running(settings(tmp_path)) as (_, client):
        for form in (
            {"user": "user00000", "password": "pw-user00001"},
            {"user": "nobody", "password": "pw-nobody"},
            {"user": "user00000"},
        ):
            r = await client.post("/login", data=form)
            assert r.status_code == 401
            assert "session" not in r.cookies


async def test_no_session(tmp_path: Path) -> None:
    async with running(settings(tmp_path)) as (arashi, client):
        for path in ("/folders", "/folders/1", "/messages/1", "/search?q=a"):
            r = await client.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/login", path
        for path in ("/messages/1/delete", "/messages/1/refile", "/logout"):
            assert (await client.post(path, data={"folder": "2"})).status_code == 401, path
        client.cookies.set("session", "forged-token")
        assert (await client.get("/folders")).status_code == 303
        assert (await client.post("/messages/1/delete")).status_code == 401
        assert sql(arashi, "SELECT count(*) FROM messages") == [(4 * 60,)]


async def test_request_classes(tmp_path: Path) -> None:
    async with running(settings(tmp_path)) as (arashi, _):
        assert arashi.sessions.request_class({"type": "http", "headers": []}) == 1
        for i in range(4):
            async with client_for(arashi) as client:
                await login(client, i)
                token = client.cookies["session"]
            scope = {"type": "http", "headers": [(b"cookie", f"a=b; session={token}".encode())]}
            assert arashi.sessions.request_class(scope) == i % 2


# --- authorisation ---------------------------------------------------------------------------


async def test_other_users_mail_is_404(tmp_path: Path, db_url: str) -> None:
    async with running(settings(tmp_path, db_url)) as (arashi, client):
        await login(client, 1)
        theirs = folders_of(arashi, 0)
        mine = folders_of(arashi, 1)
        their_message = min(messages_in(arashi, theirs["Inbox"]))
        my_message = min(messages_in(arashi, mine["Inbox"]))
        before = sql(arashi, "SELECT id, folder_id, unread FROM messages ORDER BY id")

        assert (await client.get(f"/messages/{their_message}")).status_code == 404
        assert (await client.get(f"/folders/{theirs['Inbox']}")).status_code == 404
        r = await client.post(f"/messages/{their_message}/delete")
        assert r.status_code == 404
        r = await client.post(
            f"/messages/{their_message}/refile", data={"folder": str(mine["Archive"])}
        )
        assert r.status_code == 404
        r = await client.post(
            f"/messages/{my_message}/refile", data={"folder": str(theirs["Archive"])}
        )
        assert r.status_code == 404
        r = await client.post(f"/messages/{my_message}/refile", data={"folder": "x"})
        assert r.status_code == 404
        assert (await client.get("/messages/999999")).status_code == 404
        assert (await client.get("/folders/999999")).status_code == 404
        assert sql(arashi, "SELECT id, folder_id, unread FROM messages ORDER BY id") == before
        r = await client.get("/search", params={"q": "e"})
        found = {int(m) for m in MESSAGE_LINK.findall(r.text)}
        assert found and found <= {
            m[0] for m in sql(arashi, "SELECT id FROM messages WHERE user_id = 2")
        }


@pytest.mark.parametrize(
    "query",
    ["' OR 1=1 --", "%", "_", "'", '"', "\\", "%' OR '1'='1", "'; DROP TABLE messages; --"],
)
async def test_search_injection(tmp_path: Path, query: str) -> None:
    """The corpus has none of these characters: a literal search finds nothing, and fails not."""
    async with running(settings(tmp_path)) as (arashi, client):
        await login(client, 0)
        r = await client.get("/search", params={"q": query})
        assert r.status_code == 200
        assert MESSAGE_LINK.findall(r.text) == []
        assert "0 messages found" in r.text
        assert sql(arashi, "SELECT count(*) FROM messages") == [(4 * 60,)]


async def test_search_finds_only_own_matching_mail(tmp_path: Path) -> None:
    async with running(settings(tmp_path)) as (arashi, client):
        await login(client, 2)
        # A word from another user's mail, and what it matches in this user's.
        word = sql(arashi, "SELECT subject FROM messages WHERE user_id = 1 LIMIT 1")[0][0]
        word = word.split()[-1].upper()  # search is case-insensitive
        expected = {
            m[0]
            for m in sql(
                arashi,
                "SELECT id FROM messages WHERE user_id = 3 AND (lower(subject) LIKE ? "
                "OR lower(sender) LIKE ? OR lower(body) LIKE ?)",
                (f"%{word.lower()}%",) * 3,
            )
        }
        r = await client.get("/search", params={"q": word})
        found = {int(m) for m in MESSAGE_LINK.findall(r.text)}
        if len(expected) <= db.SEARCH_LIMIT:
            assert found == expected
        else:
            assert len(found) == db.SEARCH_LIMIT and found <= expected
        assert db.like_pattern("50%_a\\b") == "%50\\%\\_a\\\\b%"


# --- transactions ----------------------------------------------------------------------------


async def test_concurrent_refile_and_delete(tmp_path: Path, db_url: str) -> None:
    """Two sessions of one user race 50 refiles and deletes over the same 8 messages."""
    # Deep route queues: this test is about transactions, not shedding (50 at once would
    # overflow the default 32 and be answered 503).
    async with running(settings(tmp_path, db_url, route_capacity=1024)) as (arashi, _):
        folders = list(folders_of(arashi, 0).values())
        targets = sorted(messages_in(arashi, folders_of(arashi, 0)["Inbox"]))[:8]
        before = sql(arashi, "SELECT count(*) FROM messages WHERE user_id = 1")[0][0]
        deleted: list[int] = []
        refiled: list[int] = []
        async with client_for(arashi) as a, client_for(arashi) as b:
            await login(a, 0)
            await login(b, 0)

            async def act(n: int) -> None:
                client = (a, b)[n % 2]
                message = targets[n % len(targets)]
                if n % 5 == 4:  # deletes race for the first half, refiles for all 8
                    message = targets[n % (len(targets) // 2)]
                    r = await client.post(f"/messages/{message}/delete")
                    if r.status_code == 303:
                        deleted.append(message)
                else:
                    folder = folders[n % len(folders)]
                    r = await client.post(
                        f"/messages/{message}/refile", data={"folder": str(folder)}
                    )
                    if r.status_code == 303:
                        refiled.append(message)
                assert r.status_code in (303, 404), r.text

            async with anyio.create_task_group() as tg:
                for n in range(50):
                    tg.start_soon(act, n)

        assert len(deleted) == len(set(deleted)), "a message was deleted twice"
        assert set(deleted) == set(targets[:4])
        assert set(refiled) >= set(targets[4:])
        after = sql(arashi, "SELECT count(*) FROM messages WHERE user_id = 1")[0][0]
        assert after == before - len(deleted)
        for message in targets:
            rows = sql(arashi, "SELECT folder_id FROM messages WHERE id = ?", (message,))
            if message in deleted:
                assert rows == []
            else:
                assert len(rows) == 1 and rows[0][0] in folders
        consistent(arashi)


# --- overload --------------------------------------------------------------------------------


class Blocker:
    """A database job that holds its ``db`` thread until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: db.Conn) -> None:
        self.started.set()
        self.release.wait(30)


async def hold_db(arashi: Arashi, blocker: Blocker, tg: Any) -> None:
    """Occupy the only ``db`` thread, so admitted requests wait there, deterministically."""
    tg.start_soon(functools.partial(arashi.app.running.call, blocker, to="db"))
    await anyio.to_thread.run_sync(blocker.started.wait, 30)
    await anyio.wait_all_tasks_blocked()


async def test_shedding_is_503_and_changes_nothing(tmp_path: Path) -> None:
    async with running(settings(tmp_path, control="limit:1", db_threads=1)) as (arashi, _):
        folders = folders_of(arashi, 0)
        first, second = sorted(messages_in(arashi, folders["Inbox"]))[:2]
        blocker = Blocker()
        async with client_for(arashi) as a, client_for(arashi) as b:
            await login(a, 0)
            await login(b, 0)
            answers: dict[str, httpx.Response] = {}

            async def refile(name: str, client: httpx.AsyncClient, message: int) -> None:
                answers[name] = await client.post(
                    f"/messages/{message}/refile",
                    data={"folder": str(folders["Archive"])},
                    headers={"Accept": "application/json"},
                )

            async with anyio.create_task_group() as tg:
                await hold_db(arashi, blocker, tg)
                tg.start_soon(refile, "admitted", a, first)
                await anyio.wait_all_tasks_blocked()
                assert arashi.app.running.stats()["refile"].in_flight == 1
                await refile("refused", b, second)  # the route holds its one request
                blocker.release.set()

        refused = answers["refused"]
        assert refused.status_code == 503
        assert float(refused.headers["Retry-After"]) > 0
        assert answers["admitted"].status_code == 303
        assert first in messages_in(arashi, folders["Archive"])
        assert second in messages_in(arashi, folders["Inbox"])  # the refused one changed nothing
        stats = arashi.app.running.stats()["refile"]
        assert stats.processed == 1 and stats.rejected == 1
        consistent(arashi)


async def test_degraded_page(tmp_path: Path) -> None:
    """A refused list request gets the lighter page: 200, X-Aseda-Degraded, no previews."""
    s = settings(tmp_path, control="limit:1", degrade=True, db_threads=1)
    async with running(s) as (arashi, _):
        inbox = folders_of(arashi, 0)["Inbox"]
        blocker = Blocker()
        async with client_for(arashi) as a, client_for(arashi) as b:
            await login(a, 0)
            await login(b, 0)
            answers: dict[str, httpx.Response] = {}

            async def get(name: str, client: httpx.AsyncClient) -> None:
                answers[name] = await client.get(f"/folders/{inbox}")

            async with anyio.create_task_group() as tg:
                await hold_db(arashi, blocker, tg)
                tg.start_soon(get, "full", a)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(get, "light", b)
                await anyio.wait_all_tasks_blocked()
                blocker.release.set()

        full, light = answers["full"], answers["light"]
        assert full.status_code == light.status_code == 200
        assert "X-Aseda-Degraded" not in full.headers and 'class="preview"' in full.text
        assert light.headers["X-Aseda-Degraded"] == "1"
        assert 'class="preview"' not in light.text and "lighter page" in light.text
        assert MESSAGE_LINK.findall(light.text) == MESSAGE_LINK.findall(full.text)


# --- durability ------------------------------------------------------------------------------


async def test_changes_survive_a_restart(tmp_path: Path, db_url: str) -> None:
    s = settings(tmp_path, db_url)
    async with running(s) as (arashi, client):
        await login(client, 0)
        folders = folders_of(arashi, 0)
        message = min(messages_in(arashi, folders["Inbox"]))
        r = await client.post(f"/messages/{message}/refile", data={"folder": str(folders["Trash"])})
        assert r.status_code == 303
        session = client.cookies["session"]
    with service(s) as again:
        assert not again.generated  # the same file, kept
        async with again.app.run(), client_for(again) as client:
            client.cookies.set("session", session)  # the session survives too
            r = await client.get(f"/messages/{message}")
            assert r.status_code == 200
            assert f'href="/folders/{folders["Trash"]}">Trash</a></dd>' in r.text


# --- over real sockets -----------------------------------------------------------------------


def listening_socket() -> socket.socket:
    """A listening socket on a free port: a client may connect before the server accepts."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


async def browse(url: str, arashi: Arashi) -> None:
    """One user's session over HTTP: every request type, and another user's mail."""
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/folders")).status_code == 303
        await login(client, 0)
        r = await client.get("/folders")
        assert r.status_code == 200
        inbox = folders_of(arashi, 0)["Inbox"]
        assert str(inbox) in FOLDER_LINK.findall(r.text)
        r = await client.get(f"/folders/{inbox}")
        messages = [int(m) for m in MESSAGE_LINK.findall(r.text)]
        assert r.status_code == 200 and messages
        r = await client.get(f"/messages/{messages[0]}")
        assert r.status_code == 200
        r = await client.get("/search", params={"q": "' OR 1=1 --"})
        assert r.status_code == 200 and MESSAGE_LINK.findall(r.text) == []
        archive = folders_of(arashi, 0)["Archive"]
        r = await client.post(f"/messages/{messages[0]}/refile", data={"folder": str(archive)})
        assert r.status_code == 303
        assert messages[0] in messages_in(arashi, archive)
        r = await client.post(f"/messages/{messages[1]}/delete")
        assert r.status_code == 303
        theirs = min(messages_in(arashi, folders_of(arashi, 1)["Inbox"]))
        assert (await client.get(f"/messages/{theirs}")).status_code == 404
        assert (await client.post("/logout")).status_code == 303
    consistent(arashi)


async def test_uvicorn(tmp_path: Path, anyio_backend: Any) -> None:
    if anyio_backend[0] == "trio":
        pytest.skip("uvicorn runs on asyncio (and uvloop) only; hypercorn covers trio")
    import contextlib

    import uvicorn

    with service(settings(tmp_path)) as arashi, listening_socket() as sock:
        config = uvicorn.Config(arashi.app, lifespan="on", log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(server.serve, sockets=[sock]))
            await browse(f"http://127.0.0.1:{sock.getsockname()[1]}", arashi)
            server.should_exit = True
        assert arashi.app.running.stats()["refile"].processed == 1


async def test_hypercorn(tmp_path: Path, anyio_backend: Any) -> None:
    pytest.importorskip("hypercorn")
    from hypercorn.config import Config

    with service(settings(tmp_path)) as arashi, listening_socket() as sock:
        config = Config()
        config.bind = [f"fd://{os.dup(sock.fileno())}"]  # hypercorn closes the fd it is given
        config.accesslog = config.errorlog = None
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            if anyio_backend[0] == "trio":
                from hypercorn.trio import serve as trio_serve

                await tg.start(
                    functools.partial(trio_serve, arashi.app, config, shutdown_trigger=stop.wait)
                )
            else:
                from hypercorn.asyncio import serve as asyncio_serve

                tg.start_soon(
                    functools.partial(asyncio_serve, arashi.app, config, shutdown_trigger=stop.wait)
                )
            await browse(f"http://127.0.0.1:{sock.getsockname()[1]}", arashi)
            stop.set()
        assert arashi.app.running.stats()["refile"].processed == 1


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_command_line(tmp_path: Path, server: str) -> None:
    """``python -m examples.arashi`` prints its address, serves, and exits 0 on SIGTERM."""
    path = tmp_path / "mail.sqlite"
    command = [
        sys.executable,
        "-m",
        "examples.arashi",
        "--server",
        server,
        "--db",
        f"sqlite:{path}",
    ]
    command += ["--users", "4", "--messages", "30", "--render-cost", "1", "--control", "limit:8"]
    root = Path(__file__).resolve().parents[1]
    with subprocess.Popen(
        command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            found = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+)\n", line)
            assert found, (line, proc.stderr.read() if proc.stderr else "")
            with httpx.Client(base_url=found.group(1)) as client:
                r = client.post("/login", data={"user": "user00001", "password": "pw-user00001"})
                assert r.status_code == 303
                r = client.get("/folders")
                assert r.status_code == 200 and FOLDER_LINK.findall(r.text)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err


async def test_render_on_the_event_loop(tmp_path: Path) -> None:
    """``--render-threads 0`` renders in the route's worker: the same pages."""
    async with running(settings(tmp_path, render_threads=0, render_cost=2)) as (arashi, client):
        await login(client, 0)
        r = await client.get("/folders")
        assert r.status_code == 200 and FOLDER_LINK.findall(r.text)
        assert "render" not in [s.name for s in arashi.app.running.stats()]
