"""depthscope: train small deep networks and watch every per-layer statistic at every step.

The package is laid out along the data flow: `engine` (config, data, model, trainer) feeds
`probe` (the per-layer statistics), whose `records` the `service` stores and streams; `analysis`
explains them. Importing the package loads nothing: the names below are resolved on first use,
so `import depthscope.service.store` never pays for torch.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from depthscope.engine.config import RunConfig as RunConfig
    from depthscope.engine.trainer import RunResult as RunResult
    from depthscope.engine.trainer import Trainer as Trainer
    from depthscope.engine.trainer import iter_records as iter_records
    from depthscope.engine.trainer import train as train
    from depthscope.records import METRICS as METRICS
    from depthscope.records import Divergence as Divergence
    from depthscope.records import StepRecord as StepRecord

try:
    __version__ = metadata.version("depthscope")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "RunConfig": "depthscope.engine.config",
    "RunResult": "depthscope.engine.trainer",
    "Trainer": "depthscope.engine.trainer",
    "iter_records": "depthscope.engine.trainer",
    "train": "depthscope.engine.trainer",
    "METRICS": "depthscope.records",
    "Divergence": "depthscope.records",
    "StepRecord": "depthscope.records",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'depthscope' has no attribute {name!r}")
