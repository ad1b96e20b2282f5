"""Arashi's web application: a plain Starlette app, pages rendered from Jinja2 templates.

The app knows nothing of stages or admission control: ``conditioning.py`` puts it behind
aseda.asgi. It does its blocking work (database queries, page rendering) through two async
callables it is given: ``conditioning.py`` gives it callables that run aseda's ``db`` and
``render`` stages.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from . import db

TEMPLATES = Path(__file__).with_name("templates")
SESSION_COOKIE = "session"
DEGRADED_KEY = "arashi.degraded"  # set in the scope by the degraded handler (conditioning.py)


@dataclasses.dataclass(frozen=True)
class Query:
    """A database job: ``fn(conn, *args, **kwargs)`` on a ``db`` thread's connection."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, conn: db.Conn) -> Any:
        return self.fn(conn, *self.args, **self.kwargs)


@dataclasses.dataclass(frozen=True)
class Page:
    """A rendering job: a template and its context."""

    template: str
    context: Mapping[str, Any]


# How the app runs its blocking work: (scope, job) -> result.
DbCall = Callable[[MutableMapping[str, Any], Query], Awaitable[Any]]
RenderCall = Callable[[MutableMapping[str, Any], Page], Awaitable[str]]


def _date(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def _preview(text: str) -> str:
    return " ".join(text.split())


def templates() -> jinja2.Environment:
    """The page templates; autoescaped, so mail and queries can never inject markup."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
    )
    env.filters["date"] = _date
    env.filters["preview"] = _preview
    return env


class Renderer:
    """Renders pages on the caller's thread, ``cost`` times each (see ``--render-cost``).

    One rendering of these small templates costs a few hundred microseconds; the pages of a real
    mail service (and Arashi's in 2001) cost tens of milliseconds. ``cost`` renders each page
    that many times and sends the last: real work of the same kind as the page itself, so lists
    and searches cost more than a folder list, as they would.
    """

    def __init__(self, cost: int = 1) -> None:
        if cost < 1:
            raise ValueError(f"render cost must be >= 1, not {cost}")
        self.env = templates()
        self.cost = cost

    def __call__(self, page: Page) -> str:
        template = self.env.get_template(page.template)
        html = ""
        for _ in range(self.cost):
            html = template.render(page.context)
        return html


class Sessions:
    """Session tokens -> users, in memory: the server-side store's cache.

    The store itself is the ``sessions`` table; this cache makes the request class a dict
    lookup (the classes callable of aseda.asgi runs for every request, before admission).
    """

    def __init__(self) -> None:
        self.users: dict[str, db.User] = {}

    @staticmethod
    def token(scope: Mapping[str, Any]) -> str | None:
        """The ``session`` cookie of a request's scope, or None."""
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                for part in value.decode("latin-1").split(";"):
                    key, _, token = part.strip().partition("=")
                    if key == SESSION_COOKIE and token:
                        return str(token)
        return None

    def request_class(self, scope: Mapping[str, Any]) -> int:
        """0 for a paying user's session, 1 for a free user or no (known) session."""
        token = self.token(scope)
        user = self.users.get(token) if token is not None else None
        return 1 if user is None else user.cls


def create_app(run_db: DbCall, run_render: RenderCall, sessions: Sessions) -> Starlette:
    """The Starlette application; ``run_db`` and ``run_render`` do its blocking work."""

    async def query(request: Request, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await run_db(request.scope, Query(fn, args, kw))

    async def page(
        request: Request, template: str, code: int = 200, **context: Any
    ) -> HTMLResponse:
        context.setdefault("user", None)
        context.setdefault("folders", [])
        context.setdefault("query", None)
        context.setdefault("degraded", False)
        html = await run_render(request.scope, Page(template, context))
        return HTMLResponse(html, status_code=code)

    async def current_user(request: Request) -> db.User | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        user = sessions.users.get(token)
        if user is None:  # e.g. after a restart: the session table is the truth
            user = await query(request, db.session_user, token)
            if user is not None:
                sessions.users[token] = user
        return user

    async def not_logged_in(request: Request) -> Response:
        if request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return await page(
            request,
            "error.html",
            401,
            status=401,
            title="Not logged in",
            message="Log in first.",
        )

    async def not_found(request: Request, user: db.User, what: str) -> Response:
        # Another user's message or folder is "not found", never "forbidden": no existence leak.
        return await page(
            request,
            "error.html",
            404,
            user=user,
            status=404,
            title="Not found",
            message=f"There is no such {what}.",
        )

    def degraded(request: Request) -> bool:
        return bool(request.scope.get(DEGRADED_KEY))

    async def index(request: Request) -> Response:
        return RedirectResponse("/folders", status_code=303)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return await page(request, "login.html")
        form = await request.form()
        name, password = form.get("user"), form.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            return await page(request, "login.html", 401, error="User and password, please.")
        result = await query(request, db.login, name, password)
        if result is None:
            return await page(
                request, "login.html", 401, name=name, error="Wrong user or password."
            )
        user, token = result
        sessions.users[token] = user
        response = RedirectResponse("/folders", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, token, max_age=db.SESSION_SECONDS, httponly=True, samesite="lax"
        )
        return response

    async def logout(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return await not_logged_in(request)
        token = request.cookies[SESSION_COOKIE]
        sessions.users.pop(token, None)
        await query(request, db.logout, token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    async def folders(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return await not_logged_in(request)
        found = await query(request, db.list_folders, user.id)
        return await page(request, "folders.html", user=user, folders=found)

    async def folder(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return await not_logged_in(request)
        folder_id: int = request.path_params["folder_id"]
        try:
            number = max(0, int(request.query_params.get("page", "0")))
        except ValueError:
            number = 0
        shown = await query(request, db.folder, user.id, folder_id)
        if shown is None:
            return await not_found(request, user, "folder")
        light = degraded(request)
        found = await query(request, db.list_folders, user.id)
        messages = await query(
            request, db.list_messages, user.id, folder_id, number, previews=not light
        )
        pages = max(1, -(-shown.total // db.PAGE_SIZE))
        return await page(
            request,
            "folder.html",
            user=user,
            folders=found,
            folder=shown,
            messages=messages,
            page=number,
            pages=pages,
            degraded=light,
        )

    async def message(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return await not_logged_in(request)
        shown = await query(request, db.show_message, user.id, request.path_params["message_id"])
        if shown is None:
            return await not_found(request, user, "message")
        found = await query(request, db.list_folders, user.id)
        return await page(request, "message.html", user=user, folders=found, message=shown)

    async def delete(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return await not_logged_in(request)
        left = await query(request, db.delete_message, user.id, request.path_params["message_id"])
        if left is None:
            return await not_found(request, user, "message")
        return RedirectResponse(f"/folders/{left}", status_code=303)

    async def refile(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return await not_logged_in(request)
        form = await request.form()
        try:
            target = int(str(form.get("folder", "")))
        except ValueError:
            return await not_found(request, user, "folder")
        left = await query(
            request, db.refile_message, user.id, request.path_params["message_id"], target
        )
        if left is None:
            return await not_found(request, user, "message or folder")
        return RedirectResponse(f"/folders/{left}", status_code=303)

    async def search(request: Request) -> Response:
        user = await current_user(request)
        if user is None:
            return await not_logged_in(request)
        text = request.query_params.get("q", "")[:200]
        light = degraded(request)
        found = await query(request, db.list_folders, user.id)
        messages = await query(request, db.search, user.id, text, recent_only=light) if text else []
        return await page(
            request,
            "search.html",
            user=user,
            folders=found,
            query=text,
            messages=messages,
            degraded=light,
            recent=db.DEGRADED_SEARCH_RECENT,
            limit=db.SEARCH_LIMIT,
        )

    routes = [
        Route("/", index),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/folders", folders),
        Route("/folders/{folder_id:int}", folder),
        Route("/messages/{message_id:int}", message),
        Route("/messages/{message_id:int}/delete", delete, methods=["POST"]),
        Route("/messages/{message_id:int}/refile", refile, methods=["POST"]),
        Route("/search", search),
    ]
    return Starlette(routes=routes)
