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
            "Right: ReLU blocks whose weights are drawn far too large, beside the healthy ReLU + "
            "He net. Every block amplifies the signal, so the gradients are orders of magnitude "
            "larger (brighter on the shared scale) and the first update throws the weights so "
            "far that the numbers overflow: magenta cells, and the banner names the first layer "
            "and statistic that went non-finite.",
            ("relu-he", "exploding"),
            "compare",
            "grad_norm",
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

LESSONS: tuple[Lesson, ...] = (GRADIENT_FLOW,)
for _lesson in LESSONS:
    check(_lesson)
if len({lesson.id for lesson in LESSONS}) != len(LESSONS):
    raise ValueError("lesson ids must be unique")
