"""uowstress: stateful stress and property testing for Unit-of-Work persistence layers.

What a team needs to point uowstress at its own Unit of Work is here: the `Target` protocol
and the parts it is made of (see examples/README.md), and the one exception hierarchy.
"""

from typing import TYPE_CHECKING, Any

from uowstress.errors import UowstressError
from uowstress.target import (
    FAULT_HOOK_POINTS,
    GUARANTEES,
    AggregateRead,
    AggregateWrite,
    FaultHook,
    Footprint,
    Ids,
    Model,
    Operation,
    PredicateRead,
    Query,
    State,
    System,
    Target,
    TargetError,
    UnitOfWork,
)

if TYPE_CHECKING:
    from uowstress.workload import Workload

__all__ = [
    "FAULT_HOOK_POINTS",
    "GUARANTEES",
    "AggregateRead",
    "AggregateWrite",
    "FaultHook",
    "Footprint",
    "Ids",
    "Model",
    "Operation",
    "PredicateRead",
    "Query",
    "State",
    "System",
    "Target",
    "TargetError",
    "UnitOfWork",
    "UowstressError",
    "Workload",
    "__version__",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Loaded on first use: it imports SQLAlchemy, which the command line's --help need not wait for.
    if name == "Workload":
        from uowstress.workload import Workload

        return Workload
    raise AttributeError(f"module 'uowstress' has no attribute {name!r}")
