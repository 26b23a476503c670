"""Guided lessons: data that walks a learner through the presets, one view at a time.

A lesson is a list of steps; each step names the presets to show (A first, then B), the view
and metric to show them in, and a few sentences on what to look at. The frontend starts each
preset's run or reuses one already trained, and a step is shared as a link. Adding a lesson is
adding an entry to LESSONS (docs/frontend.md describes the format); `check` holds every entry
to the presets, views and metrics that exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from depthscope.presets import BY_ID
from depthscope.records import METRICS

VIEWS = ("single", "compare", "ratio")  # as the frontend names them (state.js)
MAX_RUNS = 4  # the frontend shows at most four runs at once


@dataclass(frozen=True)
class LessonStep:
    title: str
    text: str  # what to look at, a few sentences
    runs: tuple[str, ...]  # preset ids; the first is A (the focused run), the second B
    view: str  # one of VIEWS
    metric: str  # one of METRICS

    def to_wire(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "text": self.text,
            "runs": list(self.runs),
            "view": self.view,
            "metric": self.metric,
        }


@dataclass(frozen=True)
class Lesson:
    id: str
    title: str
    description: str
    steps: tuple[LessonStep, ...]

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "steps": [s.to_wire() for s in self.steps],
        }


def check(lesson: Lesson) -> None:
    """Raise ValueError naming the first thing in `lesson` that the product cannot show."""
    if not lesson.steps:
        raise ValueError(f"lesson {lesson.id!r} has no steps")
    for number, step in enumerate(lesson.steps, start=1):
        where = f"lesson {lesson.id!r}, step {number}"
        unknown = [r for r in step.runs if r not in BY_ID]
        if unknown:
            raise ValueError(f"{where}: unknown preset {unknown[0]!r}")
        if not 1 <= len(step.runs) <= MAX_RUNS:
            raise ValueError(f"{where}: shows {len(step.runs)} runs, 1 to {MAX_RUNS} allowed")
        if step.view not in VIEWS:
            raise ValueError(f"{where}: unknown view {step.view!r}")
        if step.view != "single" and len(step.runs) < 2:
            raise ValueError(f"{where}: the {step.view} view needs two runs")
        if step.metric not in METRICS:
            raise ValueError(f"{where}: unknown metric {step.metric!r}")
        if not step.title or not step.text:
            raise ValueError(f"{where}: needs a title and a text")


GRADIENT_FLOW = Lesson(
    "gradient-flow",
    "Why deep networks are hard to train, and five fixes",
    "Seven steps from a deep sigmoid network that cannot learn to the remedies: an init "
    "matched to the activation, ReLU with He init, batch normalization, residual "
    "connections, and what goes wrong the other way (exploding gradients) with its cure.",
    (
        LessonStep(
            "The vanishing gradient",
            "Ten sigmoid blocks with small random weights (std 0.1). The heatmap shows the "
            "backpropagated signal dL/dh at every layer (rows, input at the bottom) and step "
            "(columns). Each block multiplies it by a sigmoid slope of at most 1/4 and by small "
            "weights, so the colour fades evenly from the readout down to block1: many decades "
            "in ten layers. The first layers hardly learn, and the loss curve stays at chance.",
            ("sigmoid-naive",),
            "single",
            "act_grad_norm",
        ),
        LessonStep(
            "An init matched to the activation: tanh + Xavier",
            "Left, the deep sigmoid net; right, tanh with Xavier (Glorot) initialization, whose "
            "weight variance keeps the signal's scale from layer to layer. Both heatmaps share "
            "one colour scale: the right one is a flat band, with block1 receiving about as "
            "much signal as the top layer, and its loss falls within a few hundred steps.",
            ("sigmoid-naive", "tanh-xavier"),
            "compare",
            "act_grad_norm",
        ),
        LessonStep(
            "ReLU with He init",
            "The ratio view colours log10 B - log10 A, here ReLU + He (B) over the deep sigmoid "
            "net (A), for the weight gradients. Orange means B's gradient is larger: the "
            "difference grows from the readout towards the input, where it is many decades. He "
            "init doubles the weight variance to make up for the half of its input that ReLU "
            "zeroes, so every layer gets a gradient of the same order.",
            ("sigmoid-naive", "relu-he"),
            "ratio",
            "grad_norm",
        ),
        LessonStep(
            "Batch normalization",
            "The same deep sigmoid net with the same naive init, now with batch normalization "
            "before every activation (right). Normalizing each pre-activation over the batch "
            "resets its scale at every layer whatever the weights do, so the backpropagated "
            "signal no longer fades towards the input and the loss falls, while the network "
            "without it (left) stays stuck.",
            ("sigmoid-naive", "batchnorm"),
            "compare",
            "act_grad_norm",
        ),
        LessonStep(
            "Residual connections",
            "Right: twenty tanh blocks, twice as deep as the tanh + Xavier net on the left, with "
            "a skip connection around every two blocks. The identity path carries the gradient "
            "back unchanged and adds it to what the blocks pass on, so although it is twice as "
            "deep, its first block receives a larger signal than the shallower net's does.",
            ("tanh-xavier", "residual"),
            "compare",
            "act_grad_norm",
        ),
        LessonStep(
            "The other way: exploding gradients",
            "B: ReLU blocks whose weights are drawn too large (std 0.25 where He init uses "
            "0.18), against A, the healthy ReLU + He net, in the ratio of their backpropagated "
            "signals. Each oversized block amplifies the signal on its way back, so B's grows "
            "towards the input: about as large as A's at the readout, some 40 times larger at "
            "block1 (orange deepening downwards). Plain SGD overshoots, each step makes the "
            "weights larger, and within a few steps the numbers overflow: magenta cells, and "
            "the banner names the layer and statistic where it began.",
            ("relu-he", "exploding"),
            "ratio",
            "act_grad_norm",
        ),
        LessonStep(
            "The cure for explosions: gradient clipping",
            "The same oversized init, without (left) and with (right) the total gradient norm "
            "clipped to 1 before each update. The gradients themselves are just as large, since "
            "grad_norm is measured before clipping; this view shows update_ratio, the size of "
            "the step actually applied relative to the weights. Clipping bounds it, so the "
            "clipped run stays finite and trains to the end.",
            ("exploding", "exploding-clipped"),
            "compare",
            "update_ratio",
        ),
    ),
)

BATCH_NORM = Lesson(
    "batch-norm",
    "Batch normalization's claims, checked on real digits",
    "Seven steps through Ioffe & Szegedy's batch normalization on the 8 × 8 digits: faster "
    "convergence, the activation's input over training, internal covariate shift measured "
    "(and why Santurkar et al. doubt it explains anything), higher learning rates, the "
    "initializations that came before it (Glorot & Bengio, He et al.) and whether it "
    "regularizes. docs/batchnorm.md has the numbers and the references.",
    (
        LessonStep(
            "Faster convergence: Ioffe & Szegedy's Figure 1",
            "Their network, three sigmoid layers of 100 units with N(0, 1) weights, learns the "
            "8 × 8 digits without (left) and with (right) batch normalization before each "
            "sigmoid. The saturation map shows what such large weights do: on the left most "
            "activation inputs sit in the sigmoid's flat tails. In the loss chart, the held-out "
            "accuracy with batch norm passes 90 % after about 300 steps; without it, only after "
            "1400 to 2000.",
            ("digits-sigmoid", "digits-batchnorm"),
            "compare",
            "saturation",
        ),
        LessonStep(
            "The activation's input over training",
            "In the histogram panel, choose 'activation input u' and block1: its distribution "
            "over training, with the 15th, 50th and 85th percentiles drawn as lines (the "
            "paper's Figure 1b, c). Without batch norm the middle 70 % of u spans about ±7, "
            "far into the sigmoid's flat tails; with it, about ±1. On these digits neither "
            "distribution drifts much over training: what batch norm changes is where it sits.",
            ("digits-sigmoid", "digits-batchnorm"),
            "compare",
            "act_grad_norm",
        ),
        LessonStep(
            "Internal covariate shift, measured",
            "u_mean_shift is how far the mean of each layer's activation input moved since the "
            "previous recorded step, in units of its spread. Batch norm makes it tiny (about "
            "1e-5 against 1e-2 here), by construction. What it does not show is that this is "
            "why batch norm helps: Santurkar et al. (2018) injected random shifts after batch "
            "norm and trained as well, and argue it helps by making the loss smoother. Note "
            "too that the plain net's shift hardly falls over training: most of it is the "
            "batch changing, not the layers below learning.",
            ("digits-sigmoid", "digits-batchnorm"),
            "compare",
            "u_mean_shift",
        ),
        LessonStep(
            "Higher learning rates",
            "Eight ReLU + He blocks on two moons at a learning rate of 0.5. Without "
            "normalization (left) the first updates grow the weights until the numbers "
            "overflow at step 4: magenta cells and a diverged run. With batch norm (right) the "
            "weights' scale no longer sets the activations' scale and the same step size "
            "trains to 100 % held-out accuracy.",
            ("relu-lr-high", "relu-lr-high-batchnorm"),
            "compare",
            "grad_norm",
        ),
        LessonStep(
            "Before batch norm: Glorot & Bengio's initialization",
            "Five tanh layers with the then standard init, uniform in ±1/√fan_in (left, "
            "PyTorch's default), and with their normalized (Xavier) init (right). Set the depth "
            "profile to step 0: with the standard init the backpropagated signal falls by 10x "
            "from block5 to block1 and the activations shrink by 7x going up; Xavier keeps "
            "both within a factor of 1.6. The histograms of h and dL/dh at step 0, layer by "
            "layer, are the paper's Figures 6 and 7.",
            ("glorot-standard", "glorot-xavier"),
            "compare",
            "act_grad_norm",
        ),
        LessonStep(
            "He initialization for deep ReLU networks",
            "Thirty ReLU layers with Xavier (left) and He (right) init. ReLU passes on half its "
            "input's second moment, so with Xavier the activation std falls by about 1/√2 per "
            "layer, from 0.55 to 1.5e-5, and the network never learns; He's doubled variance "
            "keeps it level and the network reaches over 90 % held-out accuracy, as He et al. "
            "(2015) found at the same depth.",
            ("digits-relu30-xavier", "digits-relu30-he"),
            "compare",
            "act_std",
        ),
        LessonStep(
            "Does batch norm regularize?",
            "Only 500 digits, 400 to train, without (left) and with (right) batch norm. Watch "
            "the loss chart: both fit the training images (training loss near zero) while the "
            "held-out loss stays far above it. Measured over three seeds, batch norm's held-out "
            "loss was lower in two (mean 0.10 against 0.13): a small effect on 100 held-out "
            "images, not the clear regularizer the paper describes.",
            ("digits-small", "digits-small-batchnorm"),
            "compare",
            "weight_norm",
        ),
    ),
)

LESSONS: tuple[Lesson, ...] = (GRADIENT_FLOW, BATCH_NORM)
for _lesson in LESSONS:
    check(_lesson)
if len({lesson.id for lesson in LESSONS}) != len(LESSONS):
    raise ValueError("lesson ids must be unique")
