"""aseda.bench: benchmark a service, an aseda graph in process or a server over its sockets.

* Load generators: :func:`open_loop` (arrivals on a schedule fixed in advance: a rate, spikes
  as :class:`Phase` lists, or a rate function; Poisson or fixed; free of coordinated
  omission) and :func:`closed_loop` (N clients with think time).
* Targets, ``async def request(client_id, seq) -> outcome``: :func:`graph_target` (a running
  aseda graph's ``call()``), :class:`HttpTarget` (HTTP/1.1 GET over keep-alive connections,
  reconnecting every K requests), :class:`TcpTarget` (a raw request/reply), or your own.
* Reports: :class:`Report` (throughput, latency percentiles, refusal and error shares, Jain's
  fairness index, a timeline and per-phase rows) as a console table, JSON and PNG plots.
* Pure helpers: :func:`arrival_times`, :func:`jain_index`.

Needs the ``bench`` extra for the HTTP target (h11), plots (matplotlib) and the progress bar
(rich). See docs/benchmarking.md.
"""

from .._histogram import LatencySummary as LatencySummary
from ._load import closed_loop as closed_loop
from ._load import open_loop as open_loop
from ._net import HttpTarget as HttpTarget
from ._net import TcpTarget as TcpTarget
from ._plot import plot as plot
from ._progress import PROGRESS_SECONDS as PROGRESS_SECONDS
from ._report import Report as Report
from ._report import Sample as Sample
from ._report import Samples as Samples
from ._report import Window as Window
from ._report import jain_index as jain_index
from ._report import table as table
from ._schedule import Load as Load
from ._schedule import Phase as Phase
from ._schedule import arrival_times as arrival_times
from ._schedule import offered_rate as offered_rate
from ._schedule import phase_spans as phase_spans
from ._schedule import rate_segments as rate_segments
from ._targets import Outcome as Outcome
from ._targets import Target as Target
from ._targets import TargetResult as TargetResult
from ._targets import graph_target as graph_target

__all__ = [
    "PROGRESS_SECONDS",
    "HttpTarget",
    "LatencySummary",
    "Load",
    "Outcome",
    "Phase",
    "Report",
    "Sample",
    "Samples",
    "Target",
    "TargetResult",
    "TcpTarget",
    "Window",
    "arrival_times",
    "closed_loop",
    "graph_target",
    "jain_index",
    "offered_rate",
    "open_loop",
    "phase_spans",
    "plot",
    "rate_segments",
    "table",
]

# Classes and functions defined here report this package, not the private module they live in.
for _name in __all__:
    _obj = globals()[_name]
    _own = getattr(_obj, "__module__", "").startswith(__name__ + ".")
    if _own and (isinstance(_obj, type) or (callable(_obj) and hasattr(_obj, "__code__"))):
        _obj.__module__ = __name__
del _name, _obj, _own
