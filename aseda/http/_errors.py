"""The error a handler raises to answer a request with an HTTP error status."""

from __future__ import annotations

from collections.abc import Sequence

from .._errors import AsedaError, ConfigError

__all__ = ["HttpError"]


class HttpError(AsedaError):
    """Answer the request with ``status`` and ``message``: raise it in a stage handler.

    Raised by your own handlers (``raise http.HttpError(403, "not yours")``), never by aseda:
    the server catches it where it awaits the graph's answer and sends a small page (HTML, or
    JSON when the client prefers it) carrying ``message``, with ``headers`` added. The
    connection stays open. Raised out of a handler it is, for the graph, that handler's failure
    (counted in ``failed`` and logged by the stage's ``on_error`` policy like any exception);
    for an expected answer such as a 404 on a hot path, return ``Response(404, ...)`` instead.
    It is not how the server reports its own refusals: a malformed request, a timeout or a
    refused request are answered by the socket layer directly.

    Raises:
        ConfigError: ``status`` is not an error status (400 to 599).

    Attributes:
        status: the HTTP status, 400 to 599.
        message: a short text for the client (no HTML; it is escaped).
        headers: extra response headers, ``(name, value)`` string pairs.
    """

    def __init__(self, status: int, message: str = "", *, headers: Sequence[tuple[str, str]] = ()):
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError(f"HttpError needs a status from 400 to 599, not {status!r}")
        super().__init__(f"HTTP {status}: {message}" if message else f"HTTP {status}")
        self.status = status
        self.message = message
        self.headers = tuple(headers)

    def __reduce__(self) -> tuple[type[HttpError], tuple[int, str]]:
        return (type(self), (self.status, self.message))
