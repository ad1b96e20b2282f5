"""aseda.asgi: routes of Starlette and FastAPI apps behind stages, over real sockets and in
process.

Real-socket tests run the app under uvicorn on asyncio and uvloop, and under hypercorn's trio
worker on trio (uvicorn runs on asyncio only), with httpx as the client. The in-process tests
use httpx.ASGITransport with ``async with app.run()``. Every wait is on an event: requests are
held in their handler by an anyio.Event, and an admission policy that records each offer says
when a request has reached its stage's queue.
"""

from __future__ import annotations

import contextvars
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import sniffio
import structlog
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route as Endpoint

import aseda
from aseda.asgi import Conditioned, Exchange, NotRunning, Route, running_graph

pytestmark = pytest.mark.anyio


# Helpers --------------------------------------------------------------------------------------


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free port with its lifespan; yield the base URL.

    uvicorn runs only on asyncio (and uvloop), so trio gets hypercorn's trio worker.
    """
    if sniffio.current_async_library() == "trio":
        import hypercorn.trio
        from hypercorn.config import Config as HypercornConfig

        config = HypercornConfig()
        config.bind = ["127.0.0.1:0"]
        config.graceful_timeout = 5
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            binds = await tg.start(_hypercorn, hypercorn.trio.serve, app, config, stop)
            try:
                yield binds[0]
            finally:
                stop.set()
        return
    import uvicorn

    config = uvicorn.Config(
        app, lifespan="on", log_config=None, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)  # connections wait here until uvicorn has run the lifespan startup
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}"
            finally:
                server.should_exit = True


async def _hypercorn(
    serve: Any, app: Any, config: Any, stop: anyio.Event, *, task_status: Any
) -> None:
    await serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)


def client(url: str = "http://testserver", app: Any = None) -> httpx.AsyncClient:
    """An httpx client for a URL, or in process for ``app``."""
    if app is not None:
        transport = httpx.ASGITransport(app=app)
        return httpx.AsyncClient(transport=transport, base_url=url, timeout=10)
    return httpx.AsyncClient(base_url=url, timeout=10, trust_env=False)


class Offers:
    """An admission policy that admits everything and counts the requests offered."""

    def __init__(self) -> None:
        self.seen: list[Exchange] = []
        self._changed = anyio.Event()

    def __call__(self, event: Exchange, stage: aseda.StageView) -> None:
        self.seen.append(event)
        self._changed.set()

    async def reach(self, n: int) -> None:
        """Wait until ``n`` requests have been offered (and so are queued or running)."""
        while len(self.seen) < n:
            self._changed = anyio.Event()
            await self._changed.wait()


class Held:
    """A Starlette endpoint that records its calls and waits for ``release``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.entered = anyio.Event()
        self.release = anyio.Event()

    async def endpoint(self, request: Request) -> Response:
        self.calls.append(request.headers.get("x-id", "?"))
        self.entered.set()
        await self.release.wait()
        return PlainTextResponse(f"done {request.headers.get('x-id', '?')}")


async def get_into(
    results: dict[str, httpx.Response], http: httpx.AsyncClient, path: str, rid: str
) -> None:
    results[rid] = await http.get(path, headers={"x-id": rid})


def starlette_app(**routes: Callable[..., Any]) -> Starlette:
    return Starlette(routes=[Endpoint(path, endpoint) for path, endpoint in routes.items()])


async def ok(request: Request) -> Response:
    return PlainTextResponse(f"ok {request.url.path}")


# Real sockets ---------------------------------------------------------------------------------


async def test_starlette_route_conditioned_and_others_pass_through() -> None:
    """A matched route runs on its stage; an unmatched one goes straight to the app."""
    app = Conditioned(
        Starlette(
            routes=[
                Endpoint("/hello/{name}", ok),
                Endpoint("/free", ok),
                Endpoint("/state", lambda r: JSONResponse(running_graph(r.scope).state)),
            ]
        ),
        routes=[Route("/hello/{name}", name="hello", workers=2)],
    )
    async with served(app) as url, client(url) as http:
        response = await http.get("/hello/world")
        assert (response.status_code, response.text) == (200, "ok /hello/world")
        response = await http.get("/free")
        assert (response.status_code, response.text) == (200, "ok /free")
        assert (await http.get("/state")).json() == "running"  # pass-through has the graph
        assert (await http.get("/nowhere")).status_code == 404
    # Read once the server has stopped: a client may have its whole answer a moment before
    # the worker that wrote it is done with it.
    stats = app.running.stats()["hello"]
    assert (stats.admitted, stats.processed, stats.failed) == (1, 1, 0)
    assert app.running.state == "stopped"


class Item(BaseModel):
    name: str
    price: float


async def test_fastapi_path_params_and_json() -> None:
    """A FastAPI app: path parameters, a JSON body and a JSON answer, through the stage."""
    api = FastAPI()

    @api.get("/items/{item_id}")
    async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
        return {"item_id": item_id, "q": q}

    @api.post("/items/{item_id}")
    async def put_item(item_id: int, item: Item) -> dict[str, Any]:
        return {"item_id": item_id, "total": item.price * 2, "name": item.name}

    app = Conditioned(api, routes=[Route("/items/{item_id}", name="items")])
    async with served(app) as url, client(url) as http:
        response = await http.get("/items/42", params={"q": "x"})
        assert response.json() == {"item_id": 42, "q": "x"}
        response = await http.post("/items/7", json={"name": "pen", "price": 1.5})
        assert response.json() == {"item_id": 7, "total": 3.0, "name": "pen"}
        assert (await http.get("/items/nope")).status_code == 422  # FastAPI's validation
    assert app.running.stats()["items"].processed == 3


async def test_shedding_answers_503_with_retry_after_html_or_json() -> None:
    """With the worker busy and the queue full, a request gets 503 and never runs."""
    held, offers = Held(), Offers()
    app = Conditioned(
        starlette_app(**{"/slow": held.endpoint}),
        routes=[Route("/slow", workers=1, capacity=1, admission=offers, retry_after=2.5)],
    )
    results: dict[str, httpx.Response] = {}
    async with served(app) as url, client(url) as http, anyio.create_task_group() as tg:
        tg.start_soon(get_into, results, http, "/slow", "a")
        await held.entered.wait()  # a holds the only worker
        tg.start_soon(get_into, results, http, "/slow", "b")
        await offers.reach(2)  # b waits in the queue, which is now full
        as_json = await http.get("/slow", headers={"accept": "application/json"})
        as_html = await http.get("/slow", headers={"accept": "text/html,*/*;q=0.8"})
        held.release.set()
    assert [results["a"].text, results["b"].text] == ["done a", "done b"]
    assert held.calls == ["a", "b"]  # the refused requests never reached the app
    for response in (as_json, as_html):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "3"  # 2.5 s, in whole seconds
    assert as_json.headers["content-type"] == "application/json"
    body = as_json.json()
    assert (body["error"], body["route"], body["reason"], body["retry_after"]) == (
        "overloaded",
        "/slow",
        "queue full",
        3,
    )
    assert as_html.headers["content-type"].startswith("text/html")
    assert "try again in 3 seconds" in as_html.text
    stats = app.running.stats()["/slow"]
    assert (stats.processed, stats.rejected, stats.refusals) == (2, 2, {"queue full": 2})


async def test_request_classes_lower_class_refused_first() -> None:
    """With PerClass shares, class 1 is refused while class 0 is still admitted."""
    held, offers = Held(), Offers()
    app = Conditioned(
        starlette_app(**{"/slow": held.endpoint}),
        routes=[
            Route(
                "/slow",
                workers=1,
                capacity=2,
                classes="X-Class",
                admission={0: offers, 1: offers},
            )
        ],
    )
    results: dict[str, httpx.Response] = {}
    async with served(app) as url, client(url) as http:

        async def get(rid: str, cls: str | None) -> httpx.Response:
            headers = {"x-id": rid} if cls is None else {"x-id": rid, "x-class": cls}
            return await http.get("/slow", headers=headers)

        async def keep(rid: str, cls: str) -> None:
            results[rid] = await get(rid, cls)

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep, "a", "0")
            await held.entered.wait()  # a holds the worker; the queue is empty
            tg.start_soon(keep, "b", "1")
            await offers.reach(2)  # class 1 may fill half the queue: b takes it
            refused_low = await get("c", "1")
            refused_unknown = await get("d", "banana")  # not a class: the lowest
            refused_missing = await get("e", None)  # no header: the lowest
            tg.start_soon(keep, "f", "0")
            await offers.reach(3)  # class 0 may fill the whole queue
            refused_full = await get("g", "0")
            held.release.set()
    for response in (refused_low, refused_unknown, refused_missing, refused_full):
        assert response.status_code == 503
    assert {rid: r.status_code for rid, r in results.items()} == {"a": 200, "b": 200, "f": 200}
    assert held.calls == ["a", "b", "f"]
    assert app.running.stats()["/slow"].refusals == {
        "class 1 over its share": 3,
        "queue full": 1,
    }


async def test_app_exception_is_a_500_and_the_graph_keeps_serving() -> None:
    """The app's exception reaches the server as without the middleware; aseda logs nothing."""
    calls = 0

    async def flaky(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the app broke")
        return PlainTextResponse("fine")

    app = Conditioned(starlette_app(**{"/flaky": flaky}), routes=[Route("/flaky")])
    with structlog.testing.capture_logs() as logs:
        async with served(app) as url, client(url) as http:
            assert (await http.get("/flaky")).status_code == 500
            response = await http.get("/flaky")
            assert (response.status_code, response.text) == (200, "fine")
            assert app.running.state == "running"
    assert [log for log in logs if log["log_level"] in ("error", "warning")] == []
    stats = app.running.stats()["/flaky"]
    assert (stats.processed, stats.failed) == (2, 0)


async def test_lifespan_runs_the_graph_around_the_apps_own() -> None:
    """The server's lifespan starts the graph before the app's startup and drains it after
    the app's shutdown; an app without lifespan support gets its graph all the same."""
    seen: list[str] = []

    @asynccontextmanager
    async def lifespan(inner: Starlette) -> AsyncIterator[None]:
        seen.append(f"startup, graph {app.running.state}")
        yield
        seen.append(f"shutdown, graph {app.running.state}")

    app = Conditioned(
        Starlette(routes=[Endpoint("/x", ok)], lifespan=lifespan), routes=[Route("/x")]
    )
    async with served(app) as url, client(url) as http:
        assert (await http.get("/x")).status_code == 200
    assert seen == ["startup, graph running", "shutdown, graph running"]
    assert app.running.state == "stopped"

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"no {scope['type']} here")
        await PlainTextResponse("bare")(scope, receive, send)

    plain = Conditioned(bare, routes=[Route("/*", name="all")])
    async with served(plain) as url, client(url) as http:
        assert (await http.get("/anything")).text == "bare"
    assert plain.running.stats()["all"].processed == 1
    assert plain.running.state == "stopped"


async def test_stats_route_is_read_by_aseda_top() -> None:
    """The stats route serves the snapshot aseda top reads."""
    from aseda._top import fetch_stats

    app = Conditioned(
        starlette_app(**{"/x": ok}), routes=[Route("/x", name="x")], stats_path="/aseda/stats"
    )
    async with served(app) as url, client(url) as http:
        await http.get("/x")
        snapshot = await anyio.to_thread.run_sync(fetch_stats, f"{url}/aseda/stats")
        assert snapshot["state"] == "running"
        assert [(s["name"], s["processed"]) for s in snapshot["stages"]] == [("x", 1)]
        assert snapshot["graph"]["stages"] == ["x"]
        assert (await http.post("/aseda/stats")).status_code == 405


async def test_a_client_that_leaves_while_queued_is_not_served() -> None:
    """A request whose client disconnects while it waits in the queue never runs."""
    held, offers = Held(), Offers()
    left = anyio.Event()

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        """Between the server and the middleware: tells the test when b's client has gone."""

        async def watched() -> Any:
            message = await receive()
            if message["type"] == "http.disconnect" and (b"x-id", b"b") in scope["headers"]:
                left.set()
            return message

        await app(scope, watched, send)

    app = Conditioned(
        starlette_app(**{"/slow": held.endpoint}),
        routes=[Route("/slow", workers=1, capacity=4, admission=offers)],
    )
    results: dict[str, httpx.Response] = {}
    async with served(outer) as url, client(url) as http, anyio.create_task_group() as tg:
        tg.start_soon(get_into, results, http, "/slow", "a")
        await held.entered.wait()
        host, port = url.removeprefix("http://").split(":")
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Id: b\r\n\r\n")
            await offers.reach(2)  # b is queued behind a
        await left.wait()  # b's client closed its connection; the server saw it
        tg.start_soon(get_into, results, http, "/slow", "c")
        await offers.reach(3)
        held.release.set()
    assert held.calls == ["a", "c"]
    assert [results["a"].status_code, results["c"].status_code] == [200, 200]
    stats = app.running.stats()["/slow"]
    assert (stats.processed, stats.dropped, stats.refusals) == (2, 1, {"caller gone": 1})


# In process -----------------------------------------------------------------------------------


async def test_degraded_response_instead_of_503() -> None:
    """A refused request gets the route's degraded answer, marked, without running the app."""
    held, offers = Held(), Offers()
    app = Conditioned(
        starlette_app(**{"/page": held.endpoint, "/api": held.endpoint}),
        routes=[
            Route(
                "/page",
                workers=1,
                capacity=1,
                admission=offers,
                degraded=HTMLResponse("<p>busy: a lighter page</p>"),
            ),
            Route(
                "/api",
                workers=1,
                capacity=1,
                degraded=lambda scope: JSONResponse({"cached": scope["path"]}),
            ),
        ],
    )
    results: dict[str, httpx.Response] = {}
    async with app.run() as running, client(app=app) as http:
        async with anyio.create_task_group() as tg:
            tg.start_soon(get_into, results, http, "/page", "a")
            await held.entered.wait()
            tg.start_soon(get_into, results, http, "/page", "b")
            await offers.reach(2)
            degraded = await http.get("/page")
            held.release.set()
        page = running.stats()["/page"]
    assert (degraded.status_code, degraded.text) == (200, "<p>busy: a lighter page</p>")
    assert degraded.headers["x-aseda-degraded"] == "1"
    assert "x-aseda-degraded" not in results["a"].headers
    assert held.calls == ["a", "b"]
    assert (page.processed, page.degraded) == (2, 1)


async def test_degraded_factory_and_the_controllers_degrade_action() -> None:
    """``degraded`` may be a function of the scope; a controller's "degrade" action makes
    the stage serve every request with it until undone."""

    class DegradeNow:
        name = "degrade-now"

        def observe(self, observation: aseda.Observation) -> list[aseda.Action]:
            return [aseda.Action("degrade", 1, "test")]

    app = Conditioned(
        starlette_app(**{"/api/{x}": ok}),
        routes=[
            Route(
                "/api/*",
                degraded=lambda scope: JSONResponse({"cached": scope["path"]}),
                control=DegradeNow(),
            )
        ],
        control_interval=0.01,
    )
    async with app.run() as running, client(app=app) as http:
        assert (await http.get("/api/1")).text == "ok /api/1"
        decided = anyio.Event()
        running.add_decision_listener(lambda stage, controller, action: decided.set())
        await decided.wait()
        response = await http.get("/api/2")
    assert response.json() == {"cached": "/api/2"}
    assert response.headers["x-aseda-degraded"] == "1"


async def test_app_exception_propagates_as_itself() -> None:
    """In process, the client sees the app's own exception, with its traceback."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("deep inside")

    app = Conditioned(broken, routes=[Route("/*")])
    async with app.run() as running, client(app=app) as http:
        with pytest.raises(KeyError, match="deep inside") as info:
            await http.get("/x")
        assert info.traceback[-1].name == "broken"
        assert running.state == "running"


async def test_classes_from_a_callable() -> None:
    """``classes`` may be a function of the scope; a bad answer or an error is the lowest."""
    held, offers = Held(), Offers()

    def plan(scope: Any) -> int:
        tier = dict(scope["headers"]).get(b"x-plan", b"")
        if tier == b"boom":
            raise ValueError("bad plan")
        return {b"gold": 0, b"silver": 1, b"odd": 7}.get(tier, 2)  # type: ignore[return-value]

    app = Conditioned(
        starlette_app(**{"/slow": held.endpoint}),
        routes=[
            Route(
                "/slow",
                workers=1,
                capacity=3,
                classes=plan,
                class_count=3,
                admission={0: offers, 1: offers, 2: offers},
            )
        ],
    )
    results: dict[str, httpx.Response] = {}
    async with app.run() as running, client(app=app) as http:
        tg_results: dict[str, int] = {}

        async def keep(rid: str, tier: str) -> None:
            results[rid] = await http.get("/slow", headers={"x-id": rid, "x-plan": tier})

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep, "a", "gold")
            await held.entered.wait()
            tg.start_soon(keep, "b", "bronze")  # class 2 may fill a third of the queue
            await offers.reach(2)
            for tier in ("bronze", "odd", "boom"):
                tg_results[tier] = (await http.get("/slow", headers={"x-plan": tier})).status_code
            tg.start_soon(keep, "c", "silver")  # class 1: two thirds
            await offers.reach(3)
            held.release.set()
        classes = [event.cls for event in offers.seen]
    assert tg_results == {"bronze": 503, "odd": 503, "boom": 503}
    assert classes == [0, 2, 1]  # the policy of a class is asked only within its share
    assert held.calls == ["a", "b", "c"]
    assert running.stats()["/slow"].refusals == {"class 2 over its share": 3}


async def test_matching_patterns_methods_and_first_match() -> None:
    """Exact, {param} and prefix patterns, methods (GET implies HEAD), first match wins."""
    app = Conditioned(
        Starlette(
            routes=[
                Endpoint("/a", ok, methods=["GET", "POST"]),
                Endpoint("/m/{id}", ok),
                Endpoint("/m/{id}/edit", ok),
                Endpoint("/static/{path:path}", ok),
            ]
        ),
        routes=[
            Route("/a", name="a-post", methods=["post"]),
            Route("/m/{id}", name="m"),
            Route("/static/*", name="static"),
            Route("/*", name="rest", methods="GET"),
        ],
    )
    async with app.run() as running, client(app=app) as http:
        for method, path in [
            ("POST", "/a"),
            ("GET", "/a"),
            ("HEAD", "/a"),
            ("GET", "/m/7"),
            ("GET", "/m/7/edit"),
            ("GET", "/static/css/x.css"),
            ("DELETE", "/static/x"),
        ]:
            await http.request(method, path)
        counts = {s.name: s.admitted for s in running.stats()}
    assert counts == {"a-post": 1, "m": 1, "static": 2, "rest": 3}


async def test_root_path_is_left_out_of_matching() -> None:
    """Under a root path, routes match the path the app routes on (as Starlette does)."""
    app = Conditioned(starlette_app(**{"/x": ok}), routes=[Route("/x", name="x")])
    transport = httpx.ASGITransport(app=app, root_path="/api")
    async with app.run() as running:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.get("/api/x")
        assert response.status_code == 200
        assert running.stats()["x"].processed == 1


async def test_extra_stage_called_from_a_handler() -> None:
    """A blocking stage passed as stages= is called through running_graph(scope)."""

    @aseda.stage(workers=2)
    def db(query: str) -> str:  # a plain def: runs on the stage's threads
        return query.upper()

    api = FastAPI()

    @api.get("/q/{text}")
    async def query(text: str, request: Request) -> dict[str, str]:
        return {"answer": await running_graph(request.scope).call(text, to="db")}

    app = Conditioned(api, routes=[Route("/q/{text}", name="query")], stages=[db])
    async with app.run() as running, client(app=app) as http:
        assert (await http.get("/q/hello")).json() == {"answer": "HELLO"}
    assert [(s.name, s.processed) for s in running.stats()] == [("query", 1), ("db", 1)]


async def test_the_app_runs_in_the_requests_context() -> None:
    """Context variables set before the middleware are seen by the app; those the app sets
    do not leak into the next request served by the same worker."""
    outer_var: contextvars.ContextVar[str] = contextvars.ContextVar("outer", default="-")
    app_var: contextvars.ContextVar[str] = contextvars.ContextVar("app", default="-")

    async def show(request: Request) -> Response:
        before = app_var.get()
        app_var.set(request.headers["x-id"])
        return PlainTextResponse(f"{outer_var.get()} {before}")

    app = Conditioned(starlette_app(**{"/x": show}), routes=[Route("/x", workers=1)])

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            outer_var.set(dict(scope["headers"])[b"x-id"].decode())
        await app(scope, receive, send)

    async with app.run(), client(app=outer) as http:
        answers = [(await http.get("/x", headers={"x-id": rid})).text for rid in "abc"]
    assert answers == ["a -", "b -", "c -"]


async def test_not_running_and_stopped() -> None:
    """Never started: a clear NotRunning. Stopped: 503, as unavailable, and logged."""
    app = Conditioned(starlette_app(**{"/x": ok}), routes=[Route("/x")])
    with pytest.raises(NotRunning):
        app.running  # noqa: B018
    with pytest.raises(NotRunning):
        running_graph({"type": "http"})
    async with client(app=app) as http:
        with pytest.raises(NotRunning, match="lifespan"):
            await http.get("/x")
        assert (await http.get("/other")).status_code == 404  # unconditioned: unaffected
        async with app.run():
            with pytest.raises(aseda.ConfigError, match="already running"):
                async with app.run():
                    pass
            assert (await http.get("/x")).status_code == 200
        with structlog.testing.capture_logs() as logs:
            response = await http.get("/x", headers={"accept": "application/json"})
    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert response.headers["retry-after"] == "1"
    assert [log["event"] for log in logs] == ["request refused: the graph is not running"]


async def test_a_run_block_error_leaves_as_itself() -> None:
    """An exception in ``async with app.run()`` is not wrapped in an exception group."""
    app = Conditioned(starlette_app(**{"/x": ok}), routes=[Route("/x")])
    with pytest.raises(LookupError, match="mine"):
        async with app.run():
            raise LookupError("mine")
    assert app.running.state == "cancelled"


async def test_rate_controllers_get_the_class_order_and_buckets() -> None:
    """AIMD on a classed route: one bucket per class, the lowest class cut first."""
    app = Conditioned(
        starlette_app(**{"/x": ok}),
        routes=[Route("/x", workers=3, classes="x-class", control=aseda.AIMD(target=0.5))],
    )
    stage = app.graph["/x"]
    assert isinstance(stage.admission, aseda.PerClass)
    assert stage.admission.order == (1, 0)
    buckets = stage.admission.policies
    assert [(b.rate, b.burst) for b in buckets.values()] == [(1e6, 6), (1e6, 6)]  # type: ignore[union-attr]
    assert stage.control[0].classes == (1, 0)
    async with app.run(), client(app=app) as http:
        assert (await http.get("/x", headers={"x-class": "0"})).status_code == 200


# Configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Route("search"), "starting with '/'"),
        (lambda: Route("/a/*/b"), "'\\*' may only end"),
        (lambda: Route("/a/x{id}"), "whole segment"),
        (lambda: Route("/a/{id}/{id}"), "twice"),
        (lambda: Route("/a", methods=["GET POST"]), "not an HTTP method"),
        (lambda: Route("/a", capacity=0), "capacity"),
        (lambda: Route("/a", workers=(4, 2)), "workers"),
        (lambda: Route("/a", classes=3), "classes must be"),
        (lambda: Route("/a", classes="x", class_count=0), "class_count"),
        (lambda: Route("/a", classes="x", admission={0: None}), "each class 0..1"),
        (lambda: Route("/a", classes="x", admission=aseda.Threshold(2)), "as a mapping"),
        (lambda: Route("/a", admission={0: None}), "needs classes="),
        (lambda: Route("/a", degraded="busy"), "degraded must be"),
        (lambda: Route("/a", degraded=lambda a, b: None), "takes 2 arguments"),
        (lambda: Route("/a", degraded=ok, on_refuse="wait"), "on_refuse cannot"),
        (lambda: Route("/a", on_refuse="drop"), "on_refuse must be"),  # type: ignore[arg-type]
        (lambda: Route("/a", retry_after=-1), "retry_after"),
        (lambda: Conditioned(ok, routes=[Route("/a"), Route("/a")]), "two routes are named"),
        (
            lambda: Conditioned(
                ok, routes=[Route("/a", name="db")], stages=[aseda.stage(ok, name="db")]
            ),
            "has the name of one of the stages",
        ),
        (lambda: Conditioned(ok), "at least one route"),
        (lambda: Conditioned(ok, routes=[Route("/a")], retry_after=-1), "retry_after"),
        (lambda: Conditioned(ok, routes=[Route("/a")], stats_path="stats"), "stats_path"),
        (lambda: Conditioned(ok, routes=["/a"]), "must be aseda.asgi.Route"),  # type: ignore[list-item]
    ],
)
def test_bad_configuration_raises_at_construction(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(aseda.ConfigError, match=message):
        make()


def test_prefers_json() -> None:
    from aseda.asgi._responses import prefers_json

    assert prefers_json("application/json")
    assert prefers_json("application/json, text/html;q=0.9")
    assert prefers_json("application/*")
    assert not prefers_json("")
    assert not prefers_json("*/*")
    assert not prefers_json("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert not prefers_json("application/json;q=0.5, text/html")
    assert not prefers_json("application/json;q=oops")
