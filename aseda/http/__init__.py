"""aseda.http: the HTTP/1.1 socket layer, serving a running graph (needs the ``http`` extra).

SEDA's asynchronous socket layer for HTTP: :func:`serve` accepts connections and gives each
one a task that reads requests with h11, enforces :class:`Limits` and hands every complete
:class:`Request` to the graph with ``call()``; the graph's final value, a :class:`Response`,
is written back. Slow clients are timed out by the socket layer and never hold a stage worker.
See docs/http.md.
"""

from ._errors import HttpError as HttpError
from ._limits import Limits as Limits
from ._messages import Request as Request
from ._messages import Response as Response
from ._server import HttpServer as HttpServer
from ._server import HttpStatistics as HttpStatistics
from ._server import serve as serve

__all__ = ["HttpError", "HttpServer", "HttpStatistics", "Limits", "Request", "Response", "serve"]

# Public classes and functions report the package, not the private module they live in.
for _name in __all__:
    _obj = globals()[_name]
    _obj.__module__ = __name__
del _name, _obj
