"""Presets: one-click runs that tell the gradient-flow story, each a validated RunConfig.

Every preset trains in a few seconds of one CPU core. Paired presets differ in one setting, so
a side-by-side comparison isolates what that setting does. They all learn two moons, which a
healthy network of this size separates within their few hundred plain SGD steps: the networks
whose gradients vanish stay at chance there while their fixes reach near-perfect held-out
accuracy, so the loss curves tell the same story as the heatmaps. (On the harder spirals,
most of them would still be near chance after 300 steps.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from depthscope.engine.config import RunConfig


@dataclass(frozen=True)
class Preset:
    id: str
    title: str
    description: str
    config: RunConfig

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "config": self.config.model_dump(),
        }


def _config(model: dict[str, Any], **training: Any) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"depth": 10, "width": 64, **model},
            "training": {"steps": 300, "lr": 0.1, **training},
            "data": {"dataset": "moons"},
            "recording": {"record_every": 1, "histogram_every": 10, "eval_every": 50},
        }
    )


# Large random weights: each ReLU layer multiplies the signal by about 0.6·√(64/2) ≈ 3.4, so the
# loss's gradient is enormous and one plain SGD step sends the weights to infinity.
_EXPLODING = {"activation": "relu", "init": "normal", "init_std": 0.6}

PRESETS: tuple[Preset, ...] = (
    Preset(
        "sigmoid-naive",
        "Deep sigmoid, naive init (vanishing)",
        "Ten sigmoid blocks with weights drawn from a small fixed normal (std 0.1). The sigmoid's "
        "slope is at most a quarter and the small weights shrink the signal further, so the "
        "backpropagated gradient loses a large factor at every block: the heatmap of gradient "
        "norms fades towards the input, and the first layers barely move while the last ones "
        "learn.",
        _config({"activation": "sigmoid", "init": "normal", "init_std": 0.1}),
    ),
    Preset(
        "tanh-xavier",
        "tanh + Xavier",
        "The same depth with tanh and Glorot/Xavier initialization, whose variance 1/fan-average "
        "keeps a near-linear tanh's signal at a constant scale in both directions. Gradient norms "
        "stay within a small band across layers instead of decaying, so every layer learns.",
        _config({"activation": "tanh", "init": "xavier_normal"}),
    ),
    Preset(
        "relu-he",
        "ReLU + He",
        "ReLU zeroes half of its inputs on average, halving the signal's second moment; He "
        "initialization doubles the weight variance (2/fan-in) to make up for exactly that. "
        "Activation and gradient scales stay flat across depth: the reference healthy network.",
        _config({"activation": "relu", "init": "he_normal"}),
    ),
    Preset(
        "relu-xavier-deep",
        "ReLU + Xavier at depth 30 (activations shrink)",
        "Xavier initialization assumes an activation that keeps the signal's variance, which ReLU "
        "does not: each block passes on about half the second moment, so the activation scale "
        "drops by roughly 1/√2 per layer. Over thirty blocks that is a factor of tens of "
        "thousands, visible as a steady fade in the activation-std heatmap.",
        _config({"depth": 30, "activation": "relu", "init": "xavier_normal"}, steps=200),
    ),
    Preset(
        "leaky-relu",
        "Leaky ReLU + He",
        "Leaky ReLU lets a small slope through for negative inputs, so a unit is never fully off "
        "and cannot die: the dead-unit fraction stays at zero even where plain ReLU would lose "
        "units, while signal scales stay close to the He-initialized ReLU network.",
        _config({"activation": "leaky_relu", "init": "he_normal"}),
    ),
    Preset(
        "batchnorm",
        "Batch normalization",
        "The deep-sigmoid network with the naive init from the first preset, with batch "
        "normalization before each activation. Normalizing every pre-activation over the batch "
        "puts it back in the sigmoid's steep region whatever the weights do, so gradients reach "
        "the early layers and the loss falls within the same 300 steps in which the "
        "unnormalized network stays stuck at chance.",
        _config({"activation": "sigmoid", "init": "normal", "init_std": 0.1, "norm": "batchnorm"}),
    ),
    Preset(
        "residual",
        "Residual connections",
        "Twenty tanh blocks with a skip connection around every two. The identity path carries "
        "the gradient back to the input unchanged, added to whatever the blocks contribute, so "
        "even the first layers get a usable signal in a network this deep.",
        _config(
            {"depth": 20, "activation": "tanh", "init": "xavier_normal", "residual_every": 2},
            steps=200,
            lr=0.02,
        ),
    ),
    Preset(
        "exploding",
        "Exploding gradients (no clipping)",
        "ReLU blocks with weights drawn far too large (std 0.6) and no clipping. Each block "
        "amplifies the signal several times over, the gradients come back enormous, and the "
        "first SGD step throws the weights so far that the next step is no longer finite: the "
        "run stops as diverged, naming the first layer and statistic that overflowed.",
        _config(_EXPLODING),
    ),
    Preset(
        "exploding-clipped",
        "Exploding init, with gradient clipping",
        "The same oversized initialization, with the total gradient norm clipped to 1 before "
        "every update. The gradients are just as huge, but each step moves the weights by at "
        "most the learning rate, so the run stays finite and completes; the clipped flag is set "
        "on nearly every step.",
        _config(_EXPLODING, clip="norm", clip_value=1.0),
    ),
)

BY_ID: dict[str, Preset] = {p.id: p for p in PRESETS}
