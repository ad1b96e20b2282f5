"""Put aseda in front of a Starlette app: one slow route behind a stage (docs/asgi.md).

The first lines are the example at the top of docs/asgi.md, as printed there. Run it:

    uvicorn examples.asgi_app:app                    # serve it (from the repository root)
    .venv/bin/python examples/asgi_app.py            # the same, on http://127.0.0.1:8000
    .venv/bin/python examples/asgi_app.py --requests 40
        # self-test: 40 requests at once to /report, then print what they got and stop
    .venv/bin/python examples/asgi_app.py --overhead 3
        # what the middleware costs: requests/s of a trivial route under uvicorn, with and
        # without Conditioned (3 s per run, two rounds)
"""

import anyio
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route as Endpoint

import aseda
from aseda.asgi import Conditioned, Route


async def report(request):
    await anyio.sleep(0.1)  # a slow page: 100 ms of work
    return PlainTextResponse("your report\n")


app = Conditioned(
    Starlette(routes=[Endpoint("/report", report)]),
    routes=[Route("/report", workers=4, capacity=8, control=aseda.AIMD(target=0.5))],
)

# The example ends here; what follows runs it.


def _uvicorn_server(asgi_app, **options):
    """A quiet uvicorn server for asgi_app, with its lifespan on."""
    import uvicorn

    config = uvicorn.Config(asgi_app, log_level="warning", lifespan="on", **options)
    return uvicorn.Server(config)


def _listening_socket():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # clients may connect before the server accepts: they wait here
    return sock


async def self_test(requests: int) -> None:
    """Send ``requests`` requests to /report at once, print the answers and the stage."""
    import httpx

    sock = _listening_socket()
    port = sock.getsockname()[1]
    server = _uvicorn_server(app)
    statuses: dict[int, int] = {}
    retry_after: set[str] = set()

    async def get(client: httpx.AsyncClient) -> None:
        response = await client.get("/report")
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code == 503:
            retry_after.add(response.headers.get("retry-after", "missing"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        limits = httpx.Limits(max_connections=requests)
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client,
            anyio.create_task_group() as clients,
        ):
            for _ in range(requests):
                clients.start_soon(get, client)
        stats = app.running.stats()
        server.should_exit = True
    print(f"{requests} requests at once to /report (4 workers, 8 queued at most):")
    for status in sorted(statuses):
        extra = f" (Retry-After: {', '.join(sorted(retry_after))})" if status == 503 else ""
        print(f"  {status}: {statuses[status]}{extra}")
    print(stats)


def _trivial(conditioned: bool):
    """The app the overhead is measured on: one route that answers at once."""

    async def ping(request):
        return PlainTextResponse("pong\n")

    inner = Starlette(routes=[Endpoint("/ping", ping)])
    if not conditioned:
        return inner
    return Conditioned(inner, routes=[Route("/ping", workers=64, capacity=1024)])


def serve_trivial(conditioned: bool) -> None:
    """Serve the trivial app on a free port; print ``listening on URL`` once listening."""
    sock = _listening_socket()
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    anyio.run(_uvicorn_server(_trivial(conditioned)).serve, [sock])


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux; None elsewhere)."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _in_process(conditioned: bool, requests: int) -> float:
    """CPU microseconds per request of the app called directly, with no server or sockets."""
    import time

    asgi_app = _trivial(conditioned)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/ping",
        "raw_path": b"/ping",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    request = {"type": "http.request", "body": b"", "more_body": False}
    disconnected = anyio.Event()  # never set: the client stays until it has its answer

    def receiver():
        pending = [request]

        async def receive():
            if pending:
                return pending.pop()
            await disconnected.wait()
            return {"type": "http.disconnect"}

        return receive

    async def send(message):
        pass

    async def loop() -> float:
        start = time.process_time()
        for _ in range(requests):
            await asgi_app(dict(scope), receiver(), send)
        return (time.process_time() - start) / requests * 1e6

    if not conditioned:
        return await loop()
    async with asgi_app.run():
        return await loop()


async def overhead(seconds: float, clients: int = 32, rounds: int = 2) -> None:
    """What Conditioned costs on a trivial route: in process, and under uvicorn."""
    import sys

    from aseda.bench import HttpTarget, closed_loop

    modes = ("plain", "conditioned")
    direct = {
        mode: min([await _in_process(mode == "conditioned", 5000) for _ in range(3)])
        for mode in modes
    }
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode in modes:
            command = [sys.executable, __file__, "--serve-trivial", mode]
            server = await anyio.open_process(command, stderr=None)
            try:
                assert server.stdout is not None
                line = b""
                while not line.endswith(b"\n"):
                    line += await server.stdout.receive(1)
                port = int(line.split()[-1].rsplit(b":", 1)[1])
                target = HttpTarget("127.0.0.1", port, "/ping", requests_per_connection=None)
                async with target:
                    before, answered = _cpu_seconds(server.pid), target.answered
                    result = await closed_loop(target, clients, seconds, progress=False)
                    used, answered = _cpu_seconds(server.pid), target.answered - answered
                if result.error_share or result.refused_share:
                    raise SystemExit(f"{mode}: {result.error_share:.1%} errors, refusals")
                rates[mode].append(result.throughput)
                if before is not None and used is not None and answered:
                    cpu[mode].append((used - before) / answered * 1e6)
            finally:
                server.terminate()
                await server.wait()
                await server.aclose()
    print("a trivial Starlette route (PlainTextResponse), with and without Conditioned")
    print(
        f"  in process, no server:  {direct['plain']:5.1f} us -> {direct['conditioned']:5.1f} us"
        f" per request (+{direct['conditioned'] - direct['plain']:.1f} us)"
    )
    if cpu["plain"] and cpu["conditioned"]:
        p, c = min(cpu["plain"]), min(cpu["conditioned"])
        print(
            f"  uvicorn's CPU:          {p:5.0f} us -> {c:5.0f} us per request (+{c - p:.0f} us,"
            f" x{c / p:.2f})"
        )
    p, c = max(rates["plain"]), max(rates["conditioned"])
    print(
        f"  requests/s, {clients} closed-loop clients, {seconds:g} s: {p:.0f} -> {c:.0f}"
        f" (x{c / p:.2f}; runs {_runs(rates['plain'])} and {_runs(rates['conditioned'])})"
    )


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, help="self-test: send this many at once")
    parser.add_argument("--overhead", type=float, metavar="SECONDS", help="measure the cost")
    parser.add_argument("--serve-trivial", choices=["plain", "conditioned"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.serve_trivial:
        serve_trivial(args.serve_trivial == "conditioned")
    elif args.requests:
        anyio.run(self_test, args.requests)
    elif args.overhead:
        anyio.run(overhead, args.overhead)
    else:
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
