"""The answers the middleware writes itself: a refusal (HTML or JSON by Accept) and stats."""

from __future__ import annotations

import html
import json
import math
from typing import TYPE_CHECKING, cast

from .._endpoint import stats_document
from ._types import Scope, Send

if TYPE_CHECKING:
    from .._runtime import RunningGraph

__all__ = ["prefers_json", "retry_after_value", "send_refusal", "send_stats"]

_JSON = ("application", "json")
_HTML = ("text", "html")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 36em; margin: 4em auto; padding: 0 1em">
<h1>{title}</h1>
<p>{message}</p>
<p>Please try again in {when}.</p>
</body></html>
"""

#: (title, message) per kind of refusal.
_TEXTS = {
    "overloaded": (
        "Busy right now",
        "This page is getting more requests than it can answer in good time, so yours was "
        "not started and nothing was changed.",
    ),
    "unavailable": (
        "Not available right now",
        "The service is starting or shutting down, so your request was not started and "
        "nothing was changed.",
    ),
}


def _quality(params: str) -> float:
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if math.isfinite(q) and 0.0 <= q <= 1.0 else 0.0
    return 1.0


def prefers_json(accept: str) -> bool:
    """True if an ``Accept`` header ranks JSON above HTML (HTML wins ties and no header).

    Each of the two media types takes the quality of the most specific range that matches
    it (``application/json`` over ``application/*`` over ``*/*``), as RFC 9110 says.
    """
    best: dict[tuple[str, str], tuple[int, float]] = {_JSON: (-1, 0.0), _HTML: (-1, 0.0)}
    for item in accept.split(","):
        media, _, params = item.partition(";")
        kind, _, sub = media.strip().lower().partition("/")
        if not kind:
            continue
        q = _quality(params)
        for target, (rank, _q) in best.items():
            if kind == target[0] and sub == target[1]:
                specific = 2
            elif kind == target[0] and sub == "*":
                specific = 1
            elif kind == "*" and sub == "*":
                specific = 0
            else:
                continue
            if specific > rank:
                best[target] = (specific, q)
    return best[_JSON][1] > best[_HTML][1]


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return cast("bytes", value).decode("latin-1")
    return ""


def retry_after_value(seconds: float) -> int:
    """Whole seconds for ``Retry-After`` (HTTP allows no fractions): rounded up."""
    return max(0, math.ceil(seconds))


async def send_refusal(
    send: Send, scope: Scope, *, kind: str, retry_after: float, route: str, reason: str
) -> None:
    """Answer 503 with ``Retry-After``: JSON if the client prefers it, a short page otherwise."""
    seconds = retry_after_value(retry_after)
    title, message = _TEXTS[kind]
    if prefers_json(_header(scope, b"accept")):
        document = {
            "error": kind,
            "message": f"{message} Please try again in {seconds} s.",
            "retry_after": seconds,
            "route": route,
            "reason": reason,
        }
        body = json.dumps(document).encode()
        content_type = b"application/json"
    else:
        when = "a second" if seconds <= 1 else f"{seconds} seconds"
        body = _PAGE.format(title=title, message=html.escape(message), when=when).encode()
        content_type = b"text/html; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(seconds).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_stats(send: Send, scope: Scope, running: RunningGraph | None) -> None:
    """Answer the stats route: the snapshot as JSON (405 but for GET and HEAD)."""
    status, headers = 200, [(b"content-type", b"application/json")]
    if scope.get("method") not in ("GET", "HEAD"):
        status, body = 405, b'{"error": "only GET and HEAD"}\n'
        headers.append((b"allow", b"GET, HEAD"))
    elif running is None:
        status, body = 503, b'{"error": "the graph has not started"}\n'
    else:
        body = json.dumps(stats_document(running), allow_nan=False, indent=1).encode()
    headers += [(b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
