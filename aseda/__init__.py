"""aseda: the Staged Event-Driven Architecture (SEDA) for asyncio and trio, on anyio.

A service is a graph of stages joined by bounded event queues. Each stage has a handler, a
queue, a pool of workers (tasks, or threads for blocking handlers) and an error policy.
"""

from ._admission import AdmissionPolicy as AdmissionPolicy
from ._admission import Credits as Credits
from ._admission import PerClass as PerClass
from ._admission import QueueDeadline as QueueDeadline
from ._admission import Refusal as Refusal
from ._admission import StageView as StageView
from ._admission import Threshold as Threshold
from ._admission import TokenBucket as TokenBucket
from ._admission import refuse as refuse
from ._bottleneck import Bottleneck as Bottleneck
from ._bottleneck import find_bottleneck as find_bottleneck
from ._control import Action as Action
from ._control import Controller as Controller
from ._control import Observation as Observation
from ._controllers import AIMD as AIMD
from ._controllers import USITS as USITS
from ._controllers import Batching as Batching
from ._controllers import Gradient as Gradient
from ._controllers import WorkerPool as WorkerPool
from ._controllers import overload_controller as overload_controller
from ._endpoint import StatsEndpoint as StatsEndpoint
from ._endpoint import serve_stats as serve_stats
from ._errors import Abandoned as Abandoned
from ._errors import AsedaError as AsedaError
from ._errors import ConfigError as ConfigError
from ._errors import Dropped as Dropped
from ._errors import GraphClosed as GraphClosed
from ._errors import GraphError as GraphError
from ._errors import Rejected as Rejected
from ._errors import RoutingError as RoutingError
from ._graph import Edge as Edge
from ._graph import Flow as Flow
from ._graph import Graph as Graph
from ._graphviz import to_dot as to_dot
from ._graphviz import to_mermaid as to_mermaid
from ._histogram import LatencySummary as LatencySummary
from ._instrument import Instrument as Instrument
from ._instrument import Span as Span
from ._otel import OtelInstruments as OtelInstruments
from ._otel import instrument_otel as instrument_otel
from ._outputs import DROP as DROP
from ._outputs import DeadLetter as DeadLetter
from ._outputs import Failure as Failure
from ._outputs import Many as Many
from ._outputs import To as To
from ._profiler import Profiler as Profiler
from ._prometheus import PrometheusCollector as PrometheusCollector
from ._prometheus import register_prometheus as register_prometheus
from ._queue import UNBOUNDED as UNBOUNDED
from ._refusals import AdaptiveLIFO as AdaptiveLIFO
from ._refusals import Degrade as Degrade
from ._refusals import Redirect as Redirect
from ._runtime import Reservation as Reservation
from ._runtime import RunningGraph as RunningGraph
from ._script import run as run
from ._stage import DEFAULT_CAPACITY as DEFAULT_CAPACITY
from ._stage import Stage as Stage
from ._stage import stage as stage
from ._stats import GraphStats as GraphStats
from ._stats import StageStats as StageStats

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CAPACITY",
    "DROP",
    "UNBOUNDED",
    "Abandoned",
    "AIMD",
    "Action",
    "Batching",
    "Controller",
    "Gradient",
    "Observation",
    "USITS",
    "WorkerPool",
    "overload_controller",
    "OtelInstruments",
    "PrometheusCollector",
    "StatsEndpoint",
    "instrument_otel",
    "register_prometheus",
    "serve_stats",
    "Bottleneck",
    "Profiler",
    "find_bottleneck",
    "to_dot",
    "to_mermaid",
    "Instrument",
    "LatencySummary",
    "Span",
    "AdaptiveLIFO",
    "AdmissionPolicy",
    "Credits",
    "Degrade",
    "PerClass",
    "QueueDeadline",
    "Redirect",
    "Refusal",
    "Reservation",
    "StageView",
    "Threshold",
    "TokenBucket",
    "refuse",
    "AsedaError",
    "ConfigError",
    "DeadLetter",
    "Dropped",
    "Edge",
    "Failure",
    "Flow",
    "Graph",
    "GraphClosed",
    "GraphError",
    "GraphStats",
    "Many",
    "Rejected",
    "RoutingError",
    "RunningGraph",
    "Stage",
    "StageStats",
    "To",
    "run",
    "stage",
]

# Public classes and functions report the package, not the private module they live in.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or (callable(_obj) and hasattr(_obj, "__code__")):
        _obj.__module__ = __name__
del _name, _obj
