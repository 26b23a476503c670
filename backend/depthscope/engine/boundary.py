"""The decision boundary: the network's class probabilities over a grid of the 2-D input plane.

For a run on 2-D inputs with classes, `BoundaryGrid` lays a GRID_SIZE x GRID_SIZE grid over
the training data's range (plus a margin on each side), in the standardized coordinates the
network sees, and `frame` evaluates the network there in eval mode (running statistics for
batch norm, as the held-out evaluation does). Two classes: the probability of class 1. More:
the probability of the predicted class, and which class that is, per cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from depthscope.engine.config import RunConfig
from depthscope.engine.data import Dataset

GRID_SIZE = 40  # cells per axis: a 40 x 40 forward pass costs about one or two training steps
MARGIN = 0.1  # of the data's span, added on each side
MAX_POINTS = 1000  # training points sent with the grid (the split is already shuffled)
MAX_EXTRA_FRAMES = 1000  # frames off the schedule (where a run pauses), so stepping stays bounded


def unsupported_reason(config: RunConfig) -> str | None:
    """Why this run has no decision boundary, or None when it has one."""
    if config.data.dataset == "teacher":
        return "the teacher task is regression: there are no classes to draw a boundary between"
    if config.data.input_dim != 2:
        return (
            f"the decision boundary needs 2-D inputs; this run has "
            f"data.input_dim={config.data.input_dim}"
        )
    return None


@dataclass(frozen=True)
class BoundaryLayout:
    """What stays fixed over a run: the grid's axes and the training points shown over it."""

    x: Tensor  # [GRID_SIZE] grid abscissae
    y: Tensor  # [GRID_SIZE] grid ordinates
    points: Tensor  # [n, 2] training points (n <= MAX_POINTS)
    labels: Tensor  # [n] their classes
    n_classes: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "x": self.x.tolist(),
            "y": self.y.tolist(),
            "points": {
                "x": self.points[:, 0].tolist(),
                "y": self.points[:, 1].tolist(),
                "label": self.labels.tolist(),
            },
            "n_classes": self.n_classes,
        }


@dataclass(frozen=True)
class BoundaryFrame:
    """The network's prediction over the grid after `step` updates. Rows follow y."""

    step: int
    prob: Tensor  # [GRID_SIZE, GRID_SIZE] float32 in [0, 1] (NaN where the network is not finite)
    classes: Tensor | None  # [GRID_SIZE, GRID_SIZE] int64 predicted class; None for two classes


def axis(values: Tensor, size: int = GRID_SIZE) -> Tensor:
    """`size` evenly spaced points over the range of `values`, widened by MARGIN each side."""
    lo, hi = float(values.min()), float(values.max())
    pad = MARGIN * max(hi - lo, 1e-6)
    return torch.linspace(lo - pad, hi + pad, size)


class BoundaryGrid:
    def __init__(self, data: Dataset) -> None:
        x_train = data.x_train.detach().float().cpu()
        n = min(MAX_POINTS, x_train.shape[0])
        self.layout = BoundaryLayout(
            axis(x_train[:, 0]),
            axis(x_train[:, 1]),
            x_train[:n].clone(),
            data.y_train[:n].detach().cpu().clone(),
            data.n_classes,
        )
        gy, gx = torch.meshgrid(self.layout.y, self.layout.x, indexing="ij")
        # Row-major over (y, x): reshaping the predictions gives rows that follow y.
        self.inputs = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(data.x_train.device)

    @classmethod
    def for_run(cls, config: RunConfig, data: Dataset) -> BoundaryGrid | None:
        return None if unsupported_reason(config) is not None else cls(data)

    @torch.no_grad()
    def frame(self, model: nn.Module, step: int) -> BoundaryFrame:
        was_training = model.training
        model.eval()
        try:
            logits = model(self.inputs)
        finally:
            model.train(was_training)
        p = torch.softmax(logits.float(), dim=1).cpu()
        shape = (self.layout.y.numel(), self.layout.x.numel())
        if self.layout.n_classes == 2:
            return BoundaryFrame(step, p[:, 1].reshape(shape).contiguous(), None)
        prob, classes = p.max(dim=1)
        return BoundaryFrame(step, prob.reshape(shape), classes.reshape(shape))
