"""Friendly error pages: a short HTML page, or JSON for a client that prefers it."""

from __future__ import annotations

import html
import json
from http import HTTPStatus

__all__ = ["error_page", "prefers_json", "reason"]

HTML = b"text/html; charset=utf-8"
JSON = b"application/json"

_DEFAULT_MESSAGES = {
    400: "The server could not understand this request.",
    404: "Nothing here.",
    408: "The request took too long to arrive.",
    413: "The request body is too large.",
    414: "The request target is too long.",
    431: "The request headers are too large.",
    500: "Something went wrong on our side. Please try again later.",
    503: "The server is busy right now. Please try again in a moment.",
}

_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{status} {reason}</title>
<style>body{{font-family:sans-serif;max-width:36em;margin:4em auto;color:#333}}</style>
</head><body><h1>{status} {reason}</h1><p>{message}</p></body></html>
"""

# The pages for the default messages, built once: a shed request must cost little.
_cache: dict[tuple[int, str, bool], bytes] = {}


def reason(status: int) -> str:
    """The standard reason phrase of ``status`` (``"Service Unavailable"``), or ``""``."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def prefers_json(accept: str | None) -> bool:
    """Whether an ``Accept`` header ranks ``application/json`` above ``text/html``.

    Only the two types (and ``*/*``, ``application/*``, ``text/*``) are weighed; a missing or
    unreadable header gives HTML.
    """
    if not accept or ("json" not in accept and "application/*" not in accept):
        return False  # the common case, decided without parsing
    json_q = html_q = -1.0
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media in ("application/json", "application/*") or media.endswith("+json"):
            json_q = max(json_q, q if media != "application/*" else min(q, 0.999))
        elif media in ("text/html", "text/*"):
            html_q = max(html_q, q if media == "text/html" else min(q, 0.999))
        elif media == "*/*":
            html_q = max(html_q, min(q, 0.998))
    return json_q > 0 and json_q > html_q


def error_page(status: int, message: str | None, as_json: bool) -> tuple[bytes, bytes]:
    """``(content type, body)`` of the page answering ``status`` with ``message``.

    ``message`` None gives the status's default message. The body of JSON pages is
    ``{"status": 503, "error": "Service Unavailable", "message": "..."}``.
    """
    if message is None:
        message = _DEFAULT_MESSAGES.get(status, "")
        key = (status, message, as_json)
        page = _cache.get(key)
        if page is None:
            page = _cache[key] = _build(status, message, as_json)
    else:
        page = _build(status, message, as_json)
    return (JSON if as_json else HTML), page


def _build(status: int, message: str, as_json: bool) -> bytes:
    phrase = reason(status)
    if as_json:
        doc = {"status": status, "error": phrase, "message": message}
        return json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text = _HTML.format(status=status, reason=html.escape(phrase), message=html.escape(message))
    return text.encode("utf-8")
