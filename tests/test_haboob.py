"""Haboob end to end: a real server on a real socket, real clients (httpx and raw sockets)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from aseda import http
from examples.haboob import server as haboob_server
from examples.haboob.fileset import FileSet, generate
from examples.haboob.server import Config, Haboob, serve_haboob
from examples.haboob.static import Page, Target

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"top secret: must never be served"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> FileSet:
    """One SPECweb99 directory (36 files, 102 B to 900 KiB), an index, and symlinks."""
    base = tmp_path_factory.mktemp("haboob")
    root = base / "root"
    fs = generate(root, directories=1)
    (root / "index.html").write_bytes(b"<h1>Haboob</h1>")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_bytes(b"<h1>docs</h1>")
    (root / "style.css").write_bytes(b"h1 { color: red }")
    (root / ".secret").write_bytes(SECRET)
    (base / "secret.txt").write_bytes(SECRET)
    (root / "inside-link").symlink_to(root / "dir00000" / "class0_1")
    (root / "outside-link").symlink_to(base / "secret.txt")
    (root / "outside-dir").symlink_to(base)
    return fs


@asynccontextmanager
async def haboob(
    files: FileSet, config: Config | None = None, limits: http.Limits | None = None
) -> AsyncIterator[tuple[Haboob, httpx.AsyncClient]]:
    async with (
        serve_haboob(files.root, config=config, limits=limits) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        yield server, client


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def raw_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes and read until the server closes (or one response, for keep-alive)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        data = b""
        with anyio.fail_after(10):
            while True:
                try:
                    data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return data
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep and b"content-length:" in head.lower():
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(body) >= length:
                        return data


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition on the server's state, checkpointing in between (never a fixed sleep)."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - the server's state has no event to wait on
            await anyio.sleep(0.001)


@pytest.mark.anyio
async def test_get_small_and_large_files_intact(files: FileSet) -> None:
    paths = ["/dir00000/class0_1", "/dir00000/class1_5", "/dir00000/class2_9", "/dir00000/class3_9"]
    async with haboob(files, Config(cache_bytes=4 * 2**20)) as (server, client):
        for path in paths + paths:
            response = await client.get(path)
            assert response.status_code == 200
            assert sha256(response.content) == files.digest(path)
            assert response.headers["content-type"] == "application/octet-stream"
            assert int(response.headers["content-length"]) == files.files[path]
        response = await client.get("/style.css")
        assert response.headers["content-type"] == "text/css; charset=utf-8"
        stats = server.cache_stats()
    # class3_9 (900 KiB) is over the 512 KiB item cap: read from disk both times, never cached
    assert (stats.misses, stats.hits, stats.too_large) == (6, 3, 2)  # style.css: a miss
    assert stats.items == 4 and stats.evictions == 0


@pytest.mark.anyio
async def test_cache_hits_after_a_first_miss(files: FileSet) -> None:
    async with haboob(files) as (server, client):
        for _ in range(5):
            response = await client.get("/dir00000/class1_1")
            assert response.status_code == 200
        stats = server.cache_stats()
        graph = server.running.stats()
    assert (stats.misses, stats.hits, stats.inserts, stats.items) == (1, 4, 1, 1)
    assert stats.bytes == files.files["/dir00000/class1_1"]
    assert graph["read"].processed == 1 and graph["fill"].processed == 1
    assert graph["cache"].processed == 5 and graph["respond"].processed == 5


@pytest.mark.anyio
async def test_head_and_conditional_get(files: FileSet) -> None:
    path = "/dir00000/class2_3"
    async with haboob(files) as (_, client):
        head = await client.head(path)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == files.files[path]
        etag, modified = head.headers["etag"], head.headers["last-modified"]
        again = await client.get(path, headers={"if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        again = await client.get(path, headers={"if-modified-since": modified})
        assert again.status_code == 304
        changed = await client.get(path, headers={"if-none-match": '"something-else"'})
        assert changed.status_code == 200 and sha256(changed.content) == files.digest(path)


@pytest.mark.anyio
async def test_keep_alive(files: FileSet) -> None:
    async with haboob(files) as (server, client):
        for i in range(1, 10):
            response = await client.get(f"/dir00000/class0_{i}")
            assert response.status_code == 200
            assert response.headers.get("connection") != "close"
        stats = server.server.statistics()
        assert stats.requests == 9 and stats.connections_total == 1


@pytest.mark.anyio
async def test_not_found_method_not_allowed_and_directories(files: FileSet) -> None:
    async with haboob(files) as (_, client):
        missing = await client.get("/dir00000/class9_9")
        assert missing.status_code == 404 and b"404" in missing.content
        as_json = await client.get("/nope", headers={"accept": "application/json"})
        assert as_json.status_code == 404 and as_json.json()["status"] == 404
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            refused = await client.request(method, "/index.html")
            assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        home = await client.get("/")
        assert home.status_code == 200 and home.content == b"<h1>Haboob</h1>"
        assert home.headers["content-type"] == "text/html; charset=utf-8"
        moved = await client.get("/docs?x=1")
        assert moved.status_code == 301 and moved.headers["location"] == "/docs/?x=1"
        docs = await client.get("/docs/")
        assert docs.content == b"<h1>docs</h1>"
        listing = await client.get("/dir00000/")  # no index.html: no listing either
        assert listing.status_code == 403


@pytest.mark.anyio
async def test_garbage_gets_400_and_the_connection_closes(files: FileSet) -> None:
    async with haboob(files) as (server, client):
        for garbage in (b"GARBAGE\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 8):
            answer = await raw_exchange(server.port, garbage)
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:40]
            assert b"connection: close" in answer.lower()
        assert (await client.get("/index.html")).status_code == 200  # still serving


TRAVERSALS = [
    "/../secret.txt",
    "/dir00000/../../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E%2Fsecret.txt",
    "/dir00000%2Fclass0_1",
    "/dir00000%2fclass0_1",
    "/index.html%00.txt",
    "/%00",
    "/..%5Csecret.txt",
    "/..\\secret.txt",
    "//secret.txt",
    "/%2Fsecret.txt",
    "http://localhost/../secret.txt",
    "/outside-link",
    "/outside-dir/secret.txt",
    "/.secret",
    "/%2esecret",
]


@pytest.mark.anyio
async def test_path_traversal_refused(files: FileSet) -> None:
    async with haboob(files) as (server, client):
        for target in TRAVERSALS:
            answer = await raw_exchange(
                server.port, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )
            status = int(answer.split(b" ", 2)[1])
            assert status in (400, 403, 404), (target, answer[:80])
            assert SECRET not in answer, target
        inside = await client.get("/inside-link")  # a symlink inside the root is followed
        assert sha256(inside.content) == files.digest("/dir00000/class0_1")


@pytest.mark.anyio
async def test_503_when_the_disk_stage_sheds_and_misses_coalesce(
    files: FileSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One read thread, held on an event; a second miss queues; the third is shed (503).

    A request for the page being read joins that read instead of reading it again.
    """
    entered, release = threading.Event(), threading.Event()
    real_load = haboob_server.load

    def held_load(root: str, target: Target, *, max_bytes: int) -> Page:
        if target.key == "/dir00000/class1_1":
            entered.set()
            release.wait(10)
        return real_load(root, target, max_bytes=max_bytes)

    monkeypatch.setattr(haboob_server, "load", held_load)
    config = Config(read_workers=(1, 1, 1), read_threshold=1)
    async with haboob(files, config) as (server, client), anyio.create_task_group() as tg:
        answers: dict[str, httpx.Response] = {}

        async def get(name: str, path: str) -> None:
            answers[name] = await client.get(path)

        tg.start_soon(get, "first", "/dir00000/class1_1")
        await anyio.to_thread.run_sync(entered.wait)  # the only read thread is held
        tg.start_soon(get, "queued", "/dir00000/class1_2")
        await wait_until(lambda: server.running.stats()["read"].queue_length == 1)
        tg.start_soon(get, "joined", "/dir00000/class1_1")
        await wait_until(lambda: server.running.stats()["join"].in_flight == 1)
        shed = await client.get("/dir00000/class1_3", headers={"accept": "text/html"})
        assert shed.status_code == 503 and "retry-after" in shed.headers
        assert b"busy" in shed.content and b"<html" in shed.content.lower()
        again = await client.get("/dir00000/class1_3")  # its failed read left no stale flight
        assert again.status_code == 503
        release.set()
    for name, path in [("first", "class1_1"), ("queued", "class1_2"), ("joined", "class1_1")]:
        assert answers[name].status_code == 200
        assert sha256(answers[name].content) == files.digest(f"/dir00000/{path}")
    stats = server.running.stats()
    assert stats["read"].processed == 2 and stats["read"].refusals == {"disk busy": 2}
    assert stats["join"].processed == 1
    assert server.server.statistics().refused == 2


@pytest.mark.anyio
async def test_503_when_parse_sheds(files: FileSet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entry's admission: the backlog of a held read backs up to parse, which sheds.

    Queues of two events everywhere and one join worker: requests for the page being read
    fill join, then cache, then parse, whose threshold of one refuses a request (before its
    queue is full).
    """
    entered, release = threading.Event(), threading.Event()
    real_load = haboob_server.load

    def held_load(root: str, target: Target, *, max_bytes: int) -> Page:
        entered.set()
        release.wait(10)
        return real_load(root, target, max_bytes=max_bytes)

    monkeypatch.setattr(haboob_server, "load", held_load)
    config = Config(capacity=2, threshold=1, read_workers=(1, 1, 1), join_workers=1)
    statuses: list[int] = []
    async with haboob(files, config) as (server, client), anyio.create_task_group() as tg:

        async def get() -> None:
            statuses.append((await client.get("/dir00000/class0_1")).status_code)

        tg.start_soon(get)
        await anyio.to_thread.run_sync(entered.wait)
        sent = 1
        while not server.running.stats()["parse"].rejected:
            assert sent < 20, server.running.stats()
            tg.start_soon(get)
            sent += 1
            await wait_until(lambda n=sent: server.server.statistics().requests == n)
            await anyio.wait_all_tasks_blocked()
        release.set()
    assert sorted(statuses) == [200] * (sent - 1) + [503]
    stats = server.running.stats()
    assert stats["parse"].refusals == {"over threshold": 1}
    # one read for all of them: the others joined it, or found the page cached once it was
    assert stats["read"].processed == 1 and stats["join"].processed >= 2
    assert stats["join"].processed + server.cache_stats().hits == sent - 2


@pytest.mark.anyio
async def test_slow_client_times_out_while_others_are_served(files: FileSet) -> None:
    limits = http.Limits(header_timeout=0.3)
    async with haboob(files, limits=limits) as (server, client):
        async with await anyio.connect_tcp("127.0.0.1", server.port) as slow:
            await slow.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\n")  # half a request
            for _ in range(3):  # meanwhile another client is served
                assert (await client.get("/dir00000/class1_2")).status_code == 200
            answer = b""
            with anyio.fail_after(10):
                while True:
                    try:
                        answer += await slow.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert server.server.statistics().timeouts == 1
        assert server.running.stats()["parse"].admitted == 3  # the slow one never reached it


@pytest.mark.anyio
async def test_fifty_concurrent_clients(files: FileSet) -> None:
    pick = files.sampler(seed=7)
    paths = [pick() for _ in range(100)]
    results: list[tuple[str, str]] = []
    pool = httpx.Limits(max_connections=50)
    async with (
        haboob(files, Config(cache_bytes=2 * 2**20)) as (server, _),
        httpx.AsyncClient(base_url=server.url, limits=pool) as c,
    ):
        started = anyio.Event()

        async def client(n: int) -> None:
            await started.wait()  # all fifty start together: fifty connections at once
            for path in paths[n::50]:
                response = await c.get(path)
                assert response.status_code == 200
                results.append((path, sha256(response.content)))

        async with anyio.create_task_group() as tg:
            for n in range(50):
                tg.start_soon(client, n)
            await anyio.wait_all_tasks_blocked()
            started.set()
        assert server.server.statistics().connections_total > 1
    assert len(results) == 100
    digests = {path: files.digest(path) for path in set(paths)}
    assert all(digest == digests[path] for path, digest in results)
    stats = server.cache_stats()
    assert stats.lookups == 100 and stats.bytes <= 2 * 2**20


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_command_line_serves_and_exits_on_sigterm(
    files: FileSet, backend: str, subprocess_env: dict[str, str]
) -> None:
    command = [sys.executable, "-m", "examples.haboob", "--root", str(files.root)]
    with subprocess.Popen(
        [*command, "--backend", backend, "--cache-mb", "8"],
        cwd=ROOT,
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert line.startswith("listening on http://127.0.0.1:"), line
            url = line.split()[-1]
            response = httpx.get(url + "/dir00000/class2_2", timeout=10)
            assert response.status_code == 200
            assert sha256(response.content) == files.digest("/dir00000/class2_2")
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, err
    assert out == "" and "state: stopped, abandoned: 0" in err


def test_demo_runs(tmp_path: Path) -> None:
    """The README's demo, shortened: phase rows, the stage table, cache figures, plots."""
    out = subprocess.run(
        [sys.executable, "examples/haboob/demo.py", "--scale", "0.1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for phase in ("baseline: 16 clients", "spike: 400 clients", "recovery: 16 clients"):
        assert phase in out
    for stage in ("parse", "cache", "read", "fill", "join", "respond"):
        assert f"\n{stage} " in out
    assert "state: stopped, abandoned: 0" in out and "page cache:" in out
    assert "flowchart LR" in out and "plots written:" in out
    for name in ("clients.png", "profile.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(tmp_path / name) in out


def test_docs_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The python block of docs/haboob.md prints what the page says it prints."""
    text = (ROOT / "docs" / "haboob.md").read_text()
    code = text.split("```python\n")[1].split("```")[0]
    expected = text.split("Output:\n\n```text\n")[1].split("```")[0]
    exec(compile(code, "docs/haboob.md", "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out == expected
