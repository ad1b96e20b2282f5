"""Arashi's stages: each request type a route of aseda.asgi, plus the ``db`` and ``render`` stages.

``Arashi(settings)`` prepares the database and builds ``arashi.app``, the Starlette app of
``app.py`` behind :class:`aseda.asgi.Conditioned`:

* one route stage per request type (login, list folders, list messages, show, delete, refile,
  search, logout), each with its own queue, workers and admission control, chosen by
  ``--control``;
* ``db``: a blocking stage, one database connection per thread, that runs every query;
* ``render``: a blocking stage that renders the pages from their templates.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import MutableMapping
from typing import Any

import aseda
from aseda.asgi import Conditioned, Route, running_graph

from . import db
from .app import DEGRADED_KEY, Page, Query, Renderer, Sessions, create_app

# Calibrated on a 2-core machine: a mixed workload is served at about 60 requests/s, so 128
# closed-loop users with 20 ms think time (thousands of requests/s offered) overload it, as
# the paper's 128 users overloaded Arashi. See docs/arashi.md ("Per-request cost").
DEFAULT_RENDER_COST = 100

# The request types, as in the paper: (stage name, path, methods, expensive?)
REQUEST_TYPES: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("login", "/login", ("GET", "POST"), False),
    ("logout", "/logout", ("POST",), False),
    ("list_folders", "/folders", ("GET",), False),
    ("list_messages", "/folders/{folder_id}", ("GET",), True),
    ("show", "/messages/{message_id}", ("GET",), False),
    ("delete", "/messages/{message_id}/delete", ("POST",), False),
    ("refile", "/messages/{message_id}/refile", ("POST",), False),
    ("search", "/search", ("GET",), True),
)


def parse_control(control: str) -> tuple[str, int | None]:
    """``none | aimd | usits | limit:N`` -> (kind, N or None)."""
    match = re.fullmatch(r"(none|aimd|usits)|limit:(\d+)", control)
    if match is None or (match.group(2) is not None and int(match.group(2)) < 1):
        raise ValueError(
            f"--control must be none, aimd, usits or limit:N (N >= 1), not {control!r}"
        )
    if match.group(1):
        return match.group(1), None
    return "limit", int(match.group(2))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the command line sets (see ``python -m examples.arashi --help``)."""

    db: str | None = None
    users: int = 1000
    messages: int = 100
    seed: int = 7
    control: str = "aimd"
    classes: bool = False
    degrade: bool = False
    target: float = 1.0
    render_cost: int = DEFAULT_RENDER_COST
    db_threads: int = 4
    render_threads: int = 2
    route_workers: int = 2
    # A route's queue: about a target's worth of its requests (2 workers at 15-40 pages/s).
    # A deeper queue lets a spike queue for seconds before the controller's next period.
    route_capacity: int = 32
    retry_after: float = 1.0
    control_interval: float = 0.25


class Arashi:
    """The service: the database prepared, the app built (``arashi.app``), not yet running.

    Run it under an ASGI server (its lifespan starts and drains the stages), or in process
    with ``async with arashi.app.run():``. Call :meth:`close` when done.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        kind, self.limit = parse_control(settings.control)
        self.control = kind
        dialect, target = db.parse_db(settings.db)
        self._temporary: str | None = None
        if dialect == "sqlite" and not target:
            target = db.default_sqlite_path()
            self._temporary = os.path.dirname(target)  # removed by close()
        self.database = db.Database(dialect, target)
        self.generated = db.prepare(
            self.database, db.Corpus(settings.users, settings.messages, settings.seed)
        )
        self.sessions = Sessions()
        self.renderer = Renderer(settings.render_cost)
        self.light_renderer = Renderer(1)  # degraded pages are the bare templates
        self.inner = create_app(self._run_db, self._run_render, self.sessions)
        self.app = Conditioned(
            self.inner,
            routes=self.routes(),
            stages=self.stages(),
            retry_after=settings.retry_after,
            control_interval=settings.control_interval,
        )

    # --- the extra stages ---------------------------------------------------------------------

    def stages(self) -> list[aseda.Stage]:
        database = self.database

        def db_stage(query: Query) -> Any:
            return query(database.conn())

        def render(page: Page) -> str:
            return self.renderer(page)

        def light(page: Page) -> str:
            return self.light_renderer(page)

        stages = [
            aseda.stage(
                db_stage,
                name="db",
                workers=self.settings.db_threads,
                capacity=4096,
                close=database.close_all,
            )
        ]
        if self.settings.render_threads:
            stages.append(
                aseda.stage(
                    render, name="render", workers=self.settings.render_threads, capacity=4096
                )
            )
            stages.append(aseda.stage(light, name="render_light", workers=1, capacity=4096))
        return stages

    async def _run_db(self, scope: MutableMapping[str, Any], query: Query) -> Any:
        return await running_graph(scope).call(query, to="db")

    async def _run_render(self, scope: MutableMapping[str, Any], page: Page) -> str:
        if not self.settings.render_threads:  # on the event loop, in the route's worker
            return (self.light_renderer if scope.get(DEGRADED_KEY) else self.renderer)(page)
        to = "render_light" if scope.get(DEGRADED_KEY) else "render"
        html: str = await running_graph(scope).call(page, to=to)
        return html

    # --- the routes ---------------------------------------------------------------------------

    def controller(self) -> list[Any] | None:
        # With classes, aseda.asgi gives the controller the route's class order (1, then 0).
        s = self.settings
        if self.control == "aimd":
            # raise_below=0.8: raise the rate while the delay is under 80 % of the target
            # (the default is half). Users here come back 20 ms after an answer, so every
            # bit of the target left unused is refused demand.
            return [aseda.AIMD(target=s.target, degrade=s.degrade, raise_below=0.8)]
        if self.control == "usits":
            return [aseda.USITS(target=s.target, degrade=s.degrade)]
        return None

    def routes(self) -> list[Route]:
        if self.control == "none":
            return []  # every request passes straight through: what most services run
        s = self.settings
        routes = []
        for name, path, methods, expensive in REQUEST_TYPES:
            workers, capacity, admission = s.route_workers, s.route_capacity, None
            classes = self.sessions.request_class if s.classes else None
            if self.control == "limit":
                assert self.limit is not None
                # A fixed concurrency limit: N requests in the route at once, queued or served;
                # the next one is refused at once (uvicorn's --limit-concurrency, per route).
                # It knows no classes: what users pick instead of a controller.
                workers, admission, classes = self.limit, aseda.Credits(self.limit), None
            routes.append(
                Route(
                    path,
                    name=name,
                    workers=workers,
                    capacity=capacity,
                    admission=admission,
                    control=self.controller(),
                    classes=classes,
                    degraded=self.degraded_app if s.degrade and expensive else None,
                    methods=list(methods),
                )
            )
        return routes

    async def degraded_app(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        """The lighter page: lists without previews, search over recent mail, bare templates."""
        await self.inner({**scope, DEGRADED_KEY: True}, receive, send)

    def close(self) -> None:
        """Close the database's connections; remove it if it was a temporary one."""
        self.database.close_all()
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
