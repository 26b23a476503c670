"""The batch-norm story's experiments, after the papers: their configs, as single-run presets and
as sweeps, each with what the paper reported and what depthscope measures here.

Ioffe & Szegedy (2015), batch normalization: faster convergence (Fig. 1a), a steadier
distribution of the activation's input (Fig. 1b, c), higher learning rates, a regularizing
effect. Glorot & Bengio (2010, Fig. 6-7) and He et al. (2015): the initializations that came
before it. The numbers quoted were measured with these configs on the CPU (torch 2.13, one
thread); tests/test_papers.py holds the product to each claim. presets.py shows the single runs
as presets; the sweep entries are `SweepSpec` bodies (the shape `POST /api/sweeps` takes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from depthscope.engine.config import RunConfig

DIGITS = {"dataset": "digits", "n_samples": 1797, "input_dim": 64, "noise": 0.0}
_RECORDING = {"record_every": 5, "histogram_every": 25, "eval_every": 25}


def run_config(
    model: dict[str, Any], training: dict[str, Any], data: dict[str, Any] | None = None
) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": model,
            "training": training,
            "data": DIGITS if data is None else data,
            "recording": _RECORDING,
        }
    )


# Ioffe & Szegedy's Fig. 1 network, on the 8 × 8 digits: 3 sigmoid layers of 100 units with
# N(0, 1) weights, SGD at 0.1 on batches of 60, every image (80 % to train).
FIG1_MODEL = {
    "depth": 3,
    "width": 100,
    "activation": "sigmoid",
    "init": "normal",
    "init_std": 1.0,
}
FIG1_TRAINING = {"lr": 0.1, "batch_size": 60}


def digits_config(norm: str, seed: int = 0, steps: int = 3000) -> RunConfig:
    """The Fig. 1 network on digits, with `norm` before each sigmoid."""
    return run_config({**FIG1_MODEL, "norm": norm}, {**FIG1_TRAINING, "steps": steps, "seed": seed})


# Glorot & Bengio's Fig. 6-7: five tanh layers; their "standard" init is PyTorch's default.
GLOROT_MODEL = {"depth": 5, "width": 256, "activation": "tanh"}
GLOROT_TRAINING = {"lr": 0.05, "batch_size": 60, "steps": 300}
# He et al.'s 30-layer ReLU network, Xavier against He init.
HE_MODEL = {"depth": 30, "width": 64, "activation": "relu"}
HE_TRAINING = {"lr": 0.02, "batch_size": 60, "steps": 1500}
# The regularization check: 500 digits (400 to train), 3 ReLU + He layers, 300 epochs.
SMALL_DIGITS = {**DIGITS, "n_samples": 500}
REGULARIZATION_MODEL = {"depth": 3, "width": 100, "activation": "relu", "init": "he_normal"}
REGULARIZATION_TRAINING = {"lr": 0.1, "batch_size": 40, "steps": 3000}
# Higher learning rates: ReLU + He at depth 8 on two moons, lr 0.5.
HIGH_LR_MODEL = {"depth": 8, "width": 64, "activation": "relu", "init": "he_normal"}
HIGH_LR_TRAINING = {"lr": 0.5, "batch_size": 64, "steps": 300}
MOONS = {"dataset": "moons", "n_samples": 1024}


@dataclass(frozen=True)
class PaperRun:
    """A single run of the story (presets.py makes it a preset)."""

    id: str
    title: str
    description: str
    config: RunConfig


@dataclass(frozen=True)
class PaperSweep:
    """A grid of runs of the story: `spec` is a SweepSpec body (name, base, axes, ...)."""

    id: str
    title: str
    description: str
    spec: dict[str, Any]


def _sweep(name: str, base: RunConfig, axes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "base": base.model_dump(), "axes": axes, **extra}


def glorot_config(init: str, seed: int = 0) -> RunConfig:
    return run_config({**GLOROT_MODEL, "init": init}, {**GLOROT_TRAINING, "seed": seed})


def he_config(init: str, seed: int = 0) -> RunConfig:
    return run_config({**HE_MODEL, "init": init}, {**HE_TRAINING, "seed": seed})


def regularization_config(norm: str, seed: int = 0) -> RunConfig:
    model = {**REGULARIZATION_MODEL, "norm": norm}
    return run_config(model, {**REGULARIZATION_TRAINING, "seed": seed}, SMALL_DIGITS)


def high_lr_config(norm: str) -> RunConfig:
    return run_config({**HIGH_LR_MODEL, "norm": norm}, HIGH_LR_TRAINING, MOONS)


_FIG1 = (
    "Ioffe & Szegedy's Figure 1 network on real data: the 1797 handwritten 8 × 8 digits, three "
    "sigmoid layers of 100 units with weights drawn from N(0, 1), plain SGD at 0.1 on batches "
    "of 60. "
)
_GLOROT = (
    "Glorot & Bengio's Figures 6 and 7 on the digits: five tanh layers of 256 units. Look at "
    "step 0 in the depth profile (act_std, act_grad_norm) or the histograms layer by layer. "
)
_HE = "He et al. (2015) on the digits: 30 ReLU blocks of 64 units, SGD at 0.02 for 1500 steps. "
_SMALL = (
    "The regularization check: only 500 digits (400 to train, 100 held out), three ReLU + He "
    "layers of 100 units, SGD at 0.1 on batches of 40 for 3000 steps (300 epochs). "
)
_HIGH_LR = "Eight ReLU + He blocks on two moons at a learning rate of 0.5. "

PAPER_RUNS: tuple[PaperRun, ...] = (
    PaperRun(
        "digits-sigmoid",
        "Digits: 3 sigmoid layers, N(0, 1) weights (Ioffe & Szegedy's baseline)",
        _FIG1 + "Such large weights push most activation inputs into the sigmoid's flat tails "
        "(the saturation map, the histogram of the activation input u), so learning is slow: "
        "measured here, held-out accuracy reaches 90 % after 1400-2000 steps, or not within "
        "3000 (3 seeds), and ends at 89-92 %.",
        digits_config("none"),
    ),
    PaperRun(
        "digits-batchnorm",
        "Digits: the same network with batch normalization",
        _FIG1 + "Here with batch normalization before each sigmoid: each activation input is "
        "normalized over the batch, then scaled and shifted by learned parameters, so it "
        "stays in the sigmoid's steep region whatever the weights do. Measured here: held-out "
        "accuracy passes 90 % after 250-425 steps and ends near 97 % (3 seeds). Compare the "
        "activation-input histograms and their 15th/50th/85th percentile lines.",
        digits_config("batchnorm"),
    ),
    PaperRun(
        "relu-lr-high",
        "ReLU + He at a high learning rate (diverges)",
        _HIGH_LR + "Without normalization the first updates grow the weights so much that the "
        "run goes non-finite within five steps (measured here: diverged at step 4).",
        high_lr_config("none"),
    ),
    PaperRun(
        "relu-lr-high-batchnorm",
        "The same learning rate with batch normalization",
        _HIGH_LR + "With batch normalization before each activation, the scale of the weights "
        "no longer sets the scale of the activations, so the same step size is safe: measured "
        "here, it trains to 100 % held-out accuracy.",
        high_lr_config("batchnorm"),
    ),
    PaperRun(
        "glorot-standard",
        "tanh, 5 layers, the 'standard' init (PyTorch's default)",
        _GLOROT + "The init Glorot & Bengio called standard, uniform in ±1/√fan_in (PyTorch's "
        "default for Linear), has weight variance 1/(3 fan_in): each layer shrinks the signal. "
        "Measured at step 0: the activation std falls from 0.43 at block1 to 0.06 at block5, "
        "‖dL/dh‖ from 0.07 at block5 to 0.007 at block1. It still learns in 300 steps (held-out "
        "loss 0.18).",
        glorot_config("pytorch_default"),
    ),
    PaperRun(
        "glorot-xavier",
        "tanh, 5 layers, normalized (Xavier) init",
        _GLOROT + "Their normalized init, uniform with variance 2/(fan_in + fan_out), keeps "
        "both directions near scale: measured at step 0, the activation std goes from 0.45 to "
        "0.29 over the five layers and ‖dL/dh‖ from 0.17 to 0.11; held-out loss 0.10 after "
        "300 steps.",
        glorot_config("xavier_uniform"),
    ),
    PaperRun(
        "digits-relu30-xavier",
        "30 ReLU layers, Xavier init (stalls)",
        _HE + "Xavier init assumes a unit that passes its input's variance on; ReLU passes on "
        "half, so the activation std falls by about 1/√2 per layer: measured at step 0, from "
        "0.55 at block1 to 1.5e-5 at block30. The network does not learn (held-out accuracy "
        "8-23 % over 3 seeds, chance is 10 %).",
        he_config("xavier_normal"),
    ),
    PaperRun(
        "digits-relu30-he",
        "30 ReLU layers, He init (trains)",
        _HE + "He init doubles the variance (2/fan_in) to make up for ReLU's half: measured at "
        "step 0, the activation std stays between 0.24 and 1.2 at every layer, and the "
        "network trains to 91-94 % held-out accuracy (3 seeds).",
        he_config("he_normal"),
    ),
    PaperRun(
        "digits-small",
        "500 digits, no normalization (does it overfit?)",
        _SMALL + "Measured here: the training loss falls below 0.001 and the held-out loss "
        "ends at 0.08-0.22 (3 seeds): a gap, as on any training set this small.",
        regularization_config("none"),
    ),
    PaperRun(
        "digits-small-batchnorm",
        "500 digits, with batch normalization",
        _SMALL + "With batch normalization before each ReLU. Measured here: training loss "
        "below 0.003, held-out loss 0.05-0.14 (3 seeds; without it 0.08-0.22): lower in two "
        "seeds of three, a small effect with 100 held-out images.",
        regularization_config("batchnorm"),
    ),
)

PAPER_SWEEPS: tuple[PaperSweep, ...] = (
    PaperSweep(
        "ioffe-szegedy-fig1",
        "Ioffe & Szegedy Fig. 1: batch norm on digits, 3 seeds",
        "Ioffe & Szegedy (2015), Figure 1: on MNIST, a network of three sigmoid layers of 100 "
        "units with N(0, 1) weights reached a given test accuracy far sooner with batch "
        "normalization before each sigmoid, and ended higher (a); the distribution of a "
        "sigmoid's input, drawn as its 15th, 50th and 85th percentiles over training, moved "
        "much less with it (b, c). Here the same network learns the 8 × 8 digits (1797 images, "
        "20 % held out), SGD at 0.1 on batches of 60 for 3000 steps, with and without batch "
        "norm, three seeds each. Measured here: with batch norm, held-out accuracy passes 90 % "
        "after 250-425 steps and ends at 96.7-96.9 %; without it, after 1400 and 2000 steps in "
        "two seeds and not within 3000 in the third, ending at 88.9-91.9 %. Overlay the "
        "held-out accuracy curves; the table gives the steps to 90 %.",
        _sweep(
            "Ioffe & Szegedy Fig. 1 on digits",
            digits_config("none"),
            [
                {"field": "model.norm", "values": ["none", "batchnorm"]},
                {"field": "training.seed", "values": [0, 1, 2]},
            ],
            target_accuracy=0.9,
        ),
    ),
    PaperSweep(
        "glorot-bengio-init",
        "Glorot & Bengio Fig. 6-7: tanh, standard against normalized init",
        "Glorot & Bengio (2010), Figures 6 and 7: in a five-layer tanh network with the then "
        "standard init, uniform in ±1/√fan_in (PyTorch's default for Linear), the activations' "
        "histograms narrow towards 0 layer after layer up the network, and the backpropagated "
        "gradients shrink from the top layer down towards the input; with their normalized "
        "init (Xavier: uniform, variance 2/(fan_in + fan_out)) both keep about the same spread "
        "at every layer. Here: five tanh layers of 256 units on the digits, 3 seeds. "
        "Measured at step 0 (seed 0): with the standard init the activation std falls from "
        "0.43 (block1) to 0.06 (block5) and ‖dL/dh‖ from 0.07 (block5) to 0.007 (block1), a "
        "factor of 10; with Xavier from 0.45 to 0.29 and from 0.17 to 0.11. Both learn in 300 "
        "steps (held-out loss 0.18 against 0.10). Show the histograms of h and dL/dh at step "
        "0, layer by layer.",
        _sweep(
            "Glorot & Bengio: tanh init",
            glorot_config("pytorch_default"),
            [
                {"field": "model.init", "values": ["pytorch_default", "xavier_uniform"]},
                {"field": "training.seed", "values": [0, 1, 2]},
            ],
        ),
    ),
    PaperSweep(
        "he-relu30",
        "He et al.: 30 ReLU layers, Xavier against He init",
        "He et al. (2015), Figure 3: a 30-layer ReLU network initialized with Xavier's "
        "variance did not learn at all, while their init (variance 2/fan_in) converged. ReLU "
        "zeroes half its input, so with Xavier each layer halves the signal's second moment. "
        "Here: 30 ReLU blocks of 64 units on the digits, SGD at 0.02 for 1500 steps, 3 seeds. "
        "Measured at step 0: the activation std falls from about 0.55 at block1 to 1e-5 at "
        "block30 with Xavier (about 1/√2 per layer) and stays between 0.24 and 1.2 with He. "
        "Trained: Xavier stays near chance (8-23 % held-out accuracy, chance is 10 %), He "
        "reaches 91-94 %.",
        _sweep(
            "He et al.: 30-layer ReLU init",
            he_config("xavier_normal"),
            [
                {"field": "model.init", "values": ["xavier_normal", "he_normal"]},
                {"field": "training.seed", "values": [0, 1, 2]},
            ],
        ),
    ),
    PaperSweep(
        "batchnorm-regularization",
        "Does batch norm regularize? 500 digits, with and without",
        "Ioffe & Szegedy (2015) found that batch normalization regularizes (each example is "
        "normalized with its batch's statistics, a kind of noise), so Dropout could be reduced "
        "or removed. A check on a small training set: 500 digits (400 to train, 100 held out), "
        "three ReLU + He layers of 100 units, SGD at 0.1 on batches of 40 for 3000 steps, with "
        "and without batch norm, 3 seeds. Measured here: both fit the training images (final "
        "training loss below 0.003); the final held-out loss is 0.215, 0.077 and 0.091 "
        "without batch norm and 0.144, 0.053 and 0.097 with it (held-out accuracy 93-97 % "
        "against 96-99 %): lower with batch norm in two seeds of three, a mean of 0.098 "
        "against 0.128. With 100 held-out images that is a small effect, not a clear one. "
        "Compare train and held-out loss side by side.",
        _sweep(
            "batch norm on 500 digits",
            regularization_config("none"),
            [
                {"field": "model.norm", "values": ["none", "batchnorm"]},
                {"field": "training.seed", "values": [0, 1, 2]},
            ],
        ),
    ),
)
