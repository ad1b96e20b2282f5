"""The events an HTTP graph handles: a parsed :class:`Request` in, a :class:`Response` out."""

from __future__ import annotations

import json as _json
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from .._errors import ConfigError

__all__ = ["Request", "Response", "parse_target"]

_BODY_TYPES = (bytes, bytearray, memoryview)


def parse_target(method: str, target: str) -> tuple[str, str] | None:
    """Split a request target into its percent-decoded path and its raw query.

    Returns None for a target the socket layer refuses with 400: not origin-form (``/...``)
    nor ``*`` for OPTIONS, or a path whose decoding yields NUL or is not UTF-8.
    """
    if target[:1] != "/":
        if target == "*" and method == "OPTIONS":
            return "*", ""
        return None
    path, _, query = target.partition("?")
    if "%" in path:
        try:
            path = unquote_to_bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if "\x00" in path:
        return None
    return path, query


class Request:
    """One complete HTTP request, the event an HTTP graph's entry stage receives.

    Built by the socket layer once the whole request, body included, has arrived and passed
    the :class:`Limits`. Its target is already checked: ``path`` is percent-decoded UTF-8 with
    no NUL, and starts with ``/`` (or is ``*`` for an ``OPTIONS *``).

    Attributes:
        method: the method, as sent (``"GET"``, ``"HEAD"``...).
        target: the raw request target (``"/a%2Fb?x=1"``), for checks that decoding would
            hide, such as an encoded slash.
        path: the target's path, percent-decoded (``"/a/b"``); dot segments are left as they
            are, so a file server must still refuse ``..``.
        query: the raw query string after ``?`` (``""`` if none), not decoded.
        headers: the headers as ``(lower-case name, value)`` string pairs, in order.
        body: the body, complete.
        http_version: ``"1.1"`` or ``"1.0"``.
        client: the peer's ``(address, port)``, or None when unknown.
        keep_alive: whether the connection stays open after the response (the client did
            not ask to close it and speaks HTTP/1.1).
    """

    __slots__ = (
        "_headers",
        "_raw_headers",
        "body",
        "client",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "target",
    )

    method: str
    target: str
    path: str
    query: str
    body: bytes
    http_version: str
    client: tuple[str, int] | None
    keep_alive: bool
    _raw_headers: Any
    _headers: list[tuple[str, str]] | None

    def __init__(
        self,
        method: str,
        target: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        http_version: str = "1.1",
        client: tuple[str, int] | None = None,
        keep_alive: bool = True,
    ) -> None:
        """Build a request by hand, to unit-test a stage without a server.

        Raises:
            ConfigError: the target is one the socket layer would refuse with 400.
        """
        split = parse_target(method, target)
        if split is None:
            raise ConfigError(f"not a valid origin-form request target: {target!r}")
        self.method = method
        self.target = target
        self.path, self.query = split
        self._headers = [(name.lower(), value) for name, value in headers]
        self._raw_headers = None
        self.body = bytes(body)
        self.http_version = http_version
        self.client = client
        self.keep_alive = keep_alive

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The headers as ``(lower-case name, value)`` string pairs (decoded once, on demand)."""
        headers = self._headers
        if headers is None:
            # Decoded lazily: a handler that reads no header costs no string per header.
            headers = self._headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in self._raw_headers
            ]
            self._raw_headers = None
        return headers

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` (any case), or ``default``.

        A header sent several times gives its values joined by ``", "``, as HTTP allows.
        """
        name = name.lower()
        values = [value for key, value in self.headers if key == name]
        if not values:
            return default
        return values[0] if len(values) == 1 else ", ".join(values)

    def __repr__(self) -> str:
        return f"<aseda.http.Request {self.method} {self.target!r} HTTP/{self.http_version}>"


def _request(
    method: str,
    target: str,
    path: str,
    query: str,
    raw_headers: Any,
    body: bytes,
    http_version: str,
    client: tuple[str, int] | None,
    keep_alive: bool,
) -> Request:
    """The socket layer's constructor: no checks, headers left as h11 parsed them."""
    request = Request.__new__(Request)
    request.method = method
    request.target = target
    request.path = path
    request.query = query
    request._raw_headers = raw_headers
    request._headers = None
    request.body = body
    request.http_version = http_version
    request.client = client
    request.keep_alive = keep_alive
    return request


class Response:
    """What an HTTP graph's last stage returns: the status, body and headers to send.

    The server adds ``Content-Length``, ``Date``, ``Server`` and, when the connection ends,
    ``Connection: close``; it answers a HEAD request with the same headers and no body.

    Args:
        status: the status code, 200 to 599.
        body: the whole body, as bytes.
        headers: extra headers, ``(name, value)`` string pairs (``Content-Length`` and
            ``Transfer-Encoding`` are the server's and must not be given).
        content_type: the ``Content-Type`` header, if any.

    Raises:
        ConfigError: a status out of range, a body that is not bytes, or a framing header.
    """

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        headers: Sequence[tuple[str, str]] = (),
        content_type: str | None = None,
    ) -> None:
        if type(status) is not int or not 200 <= status <= 599:
            raise ConfigError(f"Response status must be an int from 200 to 599, not {status!r}")
        if not isinstance(body, _BODY_TYPES):
            raise ConfigError(f"Response body must be bytes, not {type(body).__name__}")
        if headers:
            headers = tuple(headers)
            for name, _ in headers:
                if name.lower() in ("content-length", "transfer-encoding"):
                    raise ConfigError(f"the server sets {name}; do not give it in headers")
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type

    @classmethod
    def text(
        cls, text: str, status: int = 200, *, headers: Sequence[tuple[str, str]] = ()
    ) -> Response:
        """A ``text/plain; charset=utf-8`` response."""
        return cls(
            status, text.encode("utf-8"), headers=headers, content_type="text/plain; charset=utf-8"
        )

    @classmethod
    def html(
        cls, html: str, status: int = 200, *, headers: Sequence[tuple[str, str]] = ()
    ) -> Response:
        """A ``text/html; charset=utf-8`` response."""
        return cls(
            status, html.encode("utf-8"), headers=headers, content_type="text/html; charset=utf-8"
        )

    @classmethod
    def json(
        cls, value: Any, status: int = 200, *, headers: Sequence[tuple[str, str]] = ()
    ) -> Response:
        """An ``application/json`` response holding ``value`` (compact, UTF-8)."""
        body = _json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return cls(status, body, headers=headers, content_type="application/json")

    def __repr__(self) -> str:
        return f"<aseda.http.Response {self.status} {len(self.body)} bytes>"
