"""aseda.asgi: put the routes of an ASGI application (Starlette, FastAPI) behind aseda stages.

:class:`Conditioned` wraps an ASGI app: each :class:`Route` is a stage with a bounded queue,
a worker limit, an admission policy, controllers and request classes, whose workers run the
app for the requests it matches. A refused request gets 503 with ``Retry-After`` (or the
route's degraded response) and never reaches the app. Needs nothing beyond aseda itself.
See docs/asgi.md.
"""

from ._exchange import Exchange as Exchange
from ._middleware import Conditioned as Conditioned
from ._middleware import running_graph as running_graph
from ._routes import Route as Route
from ._types import NotRunning as NotRunning

__all__ = ["Conditioned", "Exchange", "NotRunning", "Route", "running_graph"]

# Public classes and functions report the package, not the private module they live in.
for _name in __all__:
    _obj = globals()[_name]
    _obj.__module__ = __name__
del _name, _obj
