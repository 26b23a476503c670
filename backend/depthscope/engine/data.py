"""The tasks, split into train and held-out parts: synthetic ones generated in torch from the
run's seed, and `digits`, real 8 × 8 handwritten digits.

Every task is made of points in `input_dim` dimensions. The planar tasks (spirals, circles,
moons, xor) draw 2-D points and, when `input_dim` > 2, embed them by a random rotation.
`digits` is the 1797 images (64 pixels, 10 classes) that scikit-learn ships inside its wheel
(nothing is downloaded): a seeded draw of `n_samples` of them, pixels scaled to [0, 1] plus
`noise` × N(0, 1). Features are standardized with the training split's statistics, so step-0
statistics depend on the network, not on a dataset's scale.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from depthscope.engine.config import DataConfig

HELD_OUT_FRACTION = 0.2


@dataclass(frozen=True)
class Task:
    """Raw points and targets as a generator makes them."""

    x: Tensor  # [n, features]
    y: Tensor  # [n] class ids (long) or [n, 1] regression targets (float)
    n_classes: int  # 0 for regression


@dataclass(frozen=True)
class Dataset:
    """A standardized train / held-out split, ready for training."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int  # 0 for regression

    @property
    def is_regression(self) -> bool:
        return self.n_classes == 0

    @property
    def output_dim(self) -> int:
        return 1 if self.is_regression else self.n_classes

    def to(self, device: torch.device) -> Dataset:
        return Dataset(
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.n_classes,
        )


TaskFn = Callable[[int, float, int, torch.Generator], Task]


def _randn(n: int, d: int, g: torch.Generator) -> Tensor:
    return torch.randn(n, d, generator=g)


def _labels(n: int, k: int) -> Tensor:
    return torch.arange(n) % k


def _spirals(n: int, noise: float, _d: int, g: torch.Generator) -> Task:
    y = _labels(n, 2)
    t = torch.rand(n, generator=g) * 3 * math.pi + 0.5  # radius grows with the angle
    angle = t + y * math.pi
    xy = torch.stack([t * torch.cos(angle), t * torch.sin(angle)], dim=1) / (3 * math.pi)
    return Task(xy + noise * _randn(n, 2, g), y, 2)


def _circles(n: int, noise: float, _d: int, g: torch.Generator) -> Task:
    y = _labels(n, 2)
    angle = torch.rand(n, generator=g) * 2 * math.pi
    radius = torch.where(y == 0, 1.0, 0.5)
    xy = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)
    return Task(xy + noise * _randn(n, 2, g), y, 2)


def _moons(n: int, noise: float, _d: int, g: torch.Generator) -> Task:
    y = _labels(n, 2)
    angle = torch.rand(n, generator=g) * math.pi
    upper = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
    xy = torch.where((y == 0).unsqueeze(1), upper, lower)
    return Task(xy + noise * _randn(n, 2, g), y, 2)


def _xor(n: int, noise: float, _d: int, g: torch.Generator) -> Task:
    xy = torch.rand(n, 2, generator=g) * 2 - 1
    y = ((xy[:, 0] > 0) ^ (xy[:, 1] > 0)).long()
    return Task(xy + noise * _randn(n, 2, g), y, 2)


BLOB_CLASSES = 4


def _blobs(n: int, noise: float, d: int, g: torch.Generator) -> Task:
    centres = _randn(BLOB_CLASSES, d, g) * 2
    y = _labels(n, BLOB_CLASSES)
    return Task(centres[y] + (noise + 0.5) * _randn(n, d, g), y, BLOB_CLASSES)


def _teacher(n: int, noise: float, d: int, g: torch.Generator) -> Task:
    """Regression onto a random two-layer tanh teacher network, plus observation noise."""
    hidden = 32
    w1 = _randn(d, hidden, g) / math.sqrt(d)
    w2 = _randn(hidden, 1, g) / math.sqrt(hidden)
    x = _randn(n, d, g)
    y = torch.tanh(x @ w1 * 2) @ w2
    y = (y - y.mean()) / y.std().clamp_min(1e-12)
    return Task(x, y + noise * _randn(n, 1, g), 0)


DIGITS_IMAGES, DIGITS_PIXELS, DIGITS_CLASSES = 1797, 64, 10


@functools.cache
def _digits_images() -> tuple[Tensor, Tensor]:
    """All 1797 images as [1797, 64] float64 pixels in [0, 1], and their digits."""
    from sklearn.datasets import load_digits  # here: importing scikit-learn takes about 1 s

    bunch = load_digits()
    return torch.from_numpy(bunch.data) / 16.0, torch.from_numpy(bunch.target).long()


def _digits(n: int, noise: float, _d: int, g: torch.Generator) -> Task:
    pixels, digits = _digits_images()
    pick = torch.randperm(DIGITS_IMAGES, generator=g)[:n]
    x = pixels[pick] + noise * torch.randn(n, DIGITS_PIXELS, generator=g, dtype=pixels.dtype)
    return Task(x, digits[pick], DIGITS_CLASSES)


PLANAR = {"spirals", "circles", "moons", "xor"}

DATASETS: dict[str, TaskFn] = {
    "spirals": _spirals,
    "circles": _circles,
    "moons": _moons,
    "xor": _xor,
    "blobs": _blobs,
    "teacher": _teacher,
    "digits": _digits,
}
# Classes per task (0: regression), 2 unless listed.
CLASSES: dict[str, int] = {"blobs": BLOB_CLASSES, "teacher": 0, "digits": DIGITS_CLASSES}
# Tasks of real data: the input size they have, and how many samples they hold at most.
FIXED_INPUT_DIM: dict[str, int] = {"digits": DIGITS_PIXELS}
MAX_SAMPLES: dict[str, int] = {"digits": DIGITS_IMAGES}


def output_dim(dataset: str) -> int:
    """The readout's width for a task: its classes, or 1 for a regression."""
    return CLASSES.get(dataset, 2) or 1


def _embed(x: Tensor, input_dim: int, g: torch.Generator) -> Tensor:
    """Rotate 2-D points into `input_dim` dimensions (an orthonormal 2 × d map)."""
    if input_dim == x.shape[1]:
        return x
    q, _ = torch.linalg.qr(_randn(input_dim, x.shape[1], g))
    embedded: Tensor = x @ q.T
    return embedded


def make_dataset(config: DataConfig, seed: int) -> Dataset:
    """Generate the task on the CPU from `seed`, split it and standardize the features."""
    g = torch.Generator().manual_seed(seed)
    task = DATASETS[config.dataset](config.n_samples, config.noise, config.input_dim, g)
    x = _embed(task.x, config.input_dim, g) if config.dataset in PLANAR else task.x
    order = torch.randperm(config.n_samples, generator=g)
    n_test = max(1, int(config.n_samples * HELD_OUT_FRACTION))
    test, train = order[:n_test], order[n_test:]
    mean = x[train].mean(0)
    std = x[train].std(0)
    # a feature constant on the training split (a pixel blank in every training image) is
    # centred, not scaled: dividing by its zero std would blow up the held-out images' values
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    x = ((x - mean) / std).float()
    return Dataset(x[train], task.y[train], x[test], task.y[test], task.n_classes)


def train_size(n_samples: int) -> int:
    """How many of `n_samples` points the training split keeps."""
    return n_samples - max(1, int(n_samples * HELD_OUT_FRACTION))
