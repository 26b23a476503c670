"""depthscope: train small deep networks and watch every per-layer statistic at every step."""

from depthscope.config import RunConfig
from depthscope.records import METRICS, Divergence, StepRecord
from depthscope.trainer import RunResult, Trainer, iter_records, train

__version__ = "0.1.0"

__all__ = [
    "METRICS",
    "Divergence",
    "RunConfig",
    "RunResult",
    "StepRecord",
    "Trainer",
    "__version__",
    "iter_records",
    "train",
]
