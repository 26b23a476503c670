"""Presets: one-click runs that tell the gradient-flow story, each a validated RunConfig.

Every preset trains in seconds of one CPU core. Paired presets differ in one setting, so a
side-by-side comparison isolates what that setting does. The gradient-flow presets learn two
moons, which a healthy network of this size separates within their few hundred plain SGD
steps: the networks whose gradients vanish stay at chance there while their fixes reach
near-perfect held-out accuracy, so the loss curves tell the same story as the heatmaps. (On
the harder spirals, most of them would still be near chance after 300 steps.) The batch-norm
story's presets, after the papers (Ioffe & Szegedy 2015, Glorot & Bengio 2010, He et al. 2015),
come from papers.py, most of them on real 8 × 8 handwritten digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from depthscope.engine.config import RunConfig
from depthscope.papers import PAPER_RUNS


@dataclass(frozen=True)
class Preset:
    id: str
    title: str
    description: str
    config: RunConfig
    metric: str = "grad_norm"  # the per-layer metric the explorer shows first for this preset

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "config": self.config.model_dump(),
            "metric": self.metric,
        }


# Form defaults that depend on the dataset, as "section.field" -> value (served in /api/schema as
# "x-dataset-defaults"). Regression's squared error on unit-variance targets gives a deep ReLU
# net gradients several times larger than cross-entropy does: at the default lr 0.05 the teacher
# task diverges within a few steps, at 0.002 its loss falls steadily.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "teacher": {"training.lr": 0.002},
    # the digits have 64 pixels and 1797 images: the only input size, at most that many samples
    "digits": {"data.input_dim": 64, "data.n_samples": 1797},
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


# Too large random weights: each ReLU block multiplies the signal by about 0.25·√(64/2) ≈ 1.4, in
# both directions, so over ten blocks the backpropagated signal arrives at the input about 30 times
# larger than it left the readout. Plain SGD overshoots and the weights reach infinity within a few
# steps; with the total gradient norm clipped to 1 the same net trains. (At larger stds the clipped
# run trains too, but its logits grow so large that float32's cross-entropy is exactly 0 on whole
# stretches of steps, and the heatmap shows zero gradients instead of the cure.)
_EXPLODING = {"activation": "relu", "init": "normal", "init_std": 0.25}

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
        metric="act_std",
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
        "ReLU blocks with weights drawn too large (std 0.25, where He init would use 0.18) and no "
        "clipping. Each block amplifies the signal by about 1.4 on the way forward and on the way "
        "back, so the backpropagated signal grows towards the input (bright at the bottom of its "
        "heatmap) and the activations grow towards the readout. Plain SGD overshoots, each step "
        "makes the weights larger, and after a few steps the forward pass overflows: the run "
        "stops as diverged, naming the first layer and statistic that went non-finite.",
        _config(_EXPLODING),
        metric="act_grad_norm",
    ),
    Preset(
        "exploding-clipped",
        "Exploding init, with gradient clipping",
        "The same oversized initialization, with the total gradient norm clipped to 1 before "
        "every update. The first gradients are just as large, but no step can move the weights "
        "by more than the learning rate, so the overshoot never starts: the loss falls, the "
        "clipped flag is set on most of the early steps and on occasional spikes later, and the "
        "run completes with near-perfect held-out accuracy.",
        _config(_EXPLODING, clip="norm", clip_value=1.0),
        metric="act_grad_norm",
    ),
    *(Preset(run.id, run.title, run.description, run.config) for run in PAPER_RUNS),
)

BY_ID: dict[str, Preset] = {p.id: p for p in PRESETS}
