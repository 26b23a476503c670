"""Sweep presets: one-click grids of runs that answer the product's comparative questions.

Each is a validated SweepSpec with a paragraph on what it shows and what to expect, measured
on this project's CPU with the configs below (tests/service/test_sweeps.py holds the first to
its claim). The first three train two moons with plain SGD, like the gradient-flow presets, so
a cell that stays at 50% held-out accuracy is a network that did not learn at all; the
batch-norm story's four, after the papers, train the 8 × 8 digits (papers.py has them, and
tests/test_papers.py holds each to its description).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from depthscope.papers import PAPER_SWEEPS
from depthscope.service.sweeps import SweepSpec

_DATA = {"dataset": "moons", "n_samples": 1024}
_RECORDING = {"record_every": 1, "histogram_every": 10, "eval_every": 25}


@dataclass(frozen=True)
class SweepPreset:
    id: str
    title: str
    description: str
    spec: SweepSpec

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "spec": self.spec.to_wire(),
        }


def _spec(name: str, model: dict[str, Any], training: dict[str, Any], axes: list[Any]) -> SweepSpec:
    base = {"model": model, "training": training, "data": _DATA, "recording": _RECORDING}
    return SweepSpec.model_validate({"name": name, "base": base, "axes": axes})


SWEEP_PRESETS: tuple[SweepPreset, ...] = (
    SweepPreset(
        "batchnorm-lr",
        "Batch norm allows higher learning rates",
        "ReLU blocks with He initialization, depth 8, trained at four learning rates with and "
        "without batch normalization before each activation (Ioffe & Szegedy's claim that "
        "normalization lets a network train at rates that break the plain one). Expect the "
        "plain network to learn at lr 0.05 and 0.2 and to diverge within a few steps at 0.5 "
        "and 1.0 (its cells turn magenta), while the batch-normalized network learns at every "
        "rate: plot best_val_accuracy against training.lr, one line per model.norm.",
        _spec(
            "batch norm x learning rate",
            {"depth": 8, "width": 64, "activation": "relu", "init": "he_normal"},
            {"steps": 300, "batch_size": 64},
            [
                {"field": "training.lr", "values": [0.05, 0.2, 0.5, 1.0]},
                {"field": "model.norm", "values": ["none", "batchnorm"]},
            ],
        ),
    ),
    SweepPreset(
        "depth-activation",
        "How deep can each activation go",
        "Depth 5 to 40 for four activations, each with the initialization matched to it "
        "(sigmoid and tanh with Xavier, ReLU with He, SELU with LeCun normal), 300 SGD steps at "
        "lr 0.05. Expect tanh, ReLU and SELU to learn at every depth (ReLU and SELU lose a few "
        "points of accuracy at depth 40), and sigmoid to stay at chance from depth 5 on: its "
        "slope of at most 1/4 shrinks the gradient at every layer whatever the init, which "
        "grad_ratio_step0 shows as 1e-3 at depth 5 and below 1e-12 at depth 20.",
        _spec(
            "depth x activation",
            {"width": 32},
            {"steps": 300, "batch_size": 64},
            [
                {"field": "model.depth", "values": [5, 10, 20, 40]},
                {
                    "field": "model.activation",
                    "values": ["sigmoid", "tanh", "relu", "selu"],
                    "with": {
                        "model.init": [
                            "xavier_normal",
                            "xavier_normal",
                            "he_normal",
                            "lecun_normal",
                        ]
                    },
                },
            ],
        ),
    ),
    SweepPreset(
        "init-activation-30",
        "Init x activation at depth 30",
        "Every initialization against four activations in a 30-block network, 200 SGD steps. "
        "Expect a diagonal of matches: tanh learns with Xavier, LeCun, He and orthogonal init; "
        "ReLU learns only with He (every other scheme lets its signal shrink by about 1/√2 per "
        "layer, grad_ratio_step0 near 1e-5 or smaller); SELU learns with LeCun and orthogonal "
        "init (most of the way with Xavier) and diverges with He's doubled variance; sigmoid "
        "learns with none of them. The naive normal(0.1) and PyTorch's default init leave "
        "sigmoid, tanh and ReLU at chance (SELU with the naive init gets most of the way).",
        _spec(
            "init x activation, depth 30",
            {"depth": 30, "width": 32},
            {"steps": 200, "batch_size": 64},
            [
                {"field": "model.activation", "values": ["sigmoid", "tanh", "relu", "selu"]},
                {
                    "field": "model.init",
                    "values": [
                        "normal",
                        "pytorch_default",
                        "xavier_normal",
                        "he_normal",
                        "lecun_normal",
                        "orthogonal",
                    ],
                },
            ],
        ),
    ),
    # the batch-norm story, after the papers: specs and descriptions in papers.py
    *(
        SweepPreset(p.id, p.title, p.description, SweepSpec.model_validate(p.spec))
        for p in PAPER_SWEEPS
    ),
)

BY_ID: dict[str, SweepPreset] = {p.id: p for p in SWEEP_PRESETS}
