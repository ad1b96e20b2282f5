"""The socket layer's limits: sizes, timeouts and the connection cap."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .._errors import ConfigError

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    """What the socket layer accepts from a client, and for how long it waits for one.

    Every limit is enforced on the connection's own task, before the graph sees the request,
    so a slow or hostile client costs a socket and a little memory, never a stage worker.

    Attributes:
        max_target: the longest request target in bytes (longer: 414, and the connection
            closes).
        max_header_bytes: the largest request head (request line and headers) in bytes
            (larger: 431, and the connection closes). It is h11's ``max_incomplete_event_size``.
        max_body: the largest request body in bytes (larger: 413, and the connection closes;
            a ``Content-Length`` that is too large is refused before any of the body is read).
        header_timeout: seconds from a request's first byte to its complete body; a slower
            client (a slowloris) gets 408 and the connection closes.
        idle_timeout: seconds a keep-alive connection (or a new one) may wait for the first
            byte of its next request; then it is closed quietly.
        write_timeout: seconds a response may take to be written; a client that stops
            reading is disconnected.
        max_connections: connections served at once; one more is answered 503 at once and
            closed.
        shutdown_timeout: seconds that requests in flight get to finish when the server's
            block is left; then their connections are cancelled.
    """

    max_target: int = 8192
    max_header_bytes: int = 16384
    max_body: int = 1 << 20
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    write_timeout: float = 30.0
    max_connections: int = 10_000
    shutdown_timeout: float = 10.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ConfigError(
                        f"Limits.{field.name} must be a positive integer, not {value!r}"
                    )
            elif isinstance(value, bool) or not (
                isinstance(value, (int, float)) and value > 0 and not math.isnan(value)
            ):
                raise ConfigError(f"Limits.{field.name} must be positive seconds, not {value!r}")
        if self.max_target >= self.max_header_bytes:
            raise ConfigError(
                f"Limits.max_target ({self.max_target}) must be smaller than "
                f"max_header_bytes ({self.max_header_bytes}), which holds the request line"
            )
