"""Lessons: every entry names presets, views and metrics that exist, `check` refuses what the
product cannot show, and what the gradient-flow lesson tells a learner to look for is what the
presets' first step measures."""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import replace

import pytest
import torch
from depthscope import StepRecord, Trainer, train
from depthscope.lessons import BATCH_NORM, GRADIENT_FLOW, LESSONS, Lesson, LessonStep, check
from depthscope.presets import BY_ID

STEP = GRADIENT_FLOW.steps[0]


def test_lessons_are_valid_with_unique_ids() -> None:
    assert len({lesson.id for lesson in LESSONS}) == len(LESSONS)
    for lesson in LESSONS:
        check(lesson)
        wire = lesson.to_wire()
        assert wire["steps"] and all(set(s) >= {"runs", "view", "metric"} for s in wire["steps"])


def test_lessons_gradient_flow_walks_the_argument_in_order() -> None:
    shown = [step.runs[-1] for step in GRADIENT_FLOW.steps]
    order = ["sigmoid-naive", "tanh-xavier", "relu-he", "batchnorm", "residual", "exploding"]
    assert shown == [*order, "exploding-clipped"]


def test_lessons_batch_norm_walks_the_papers_in_order() -> None:
    """Ioffe & Szegedy's claims in order, then the inits before batch norm, then regularization;
    every pair is plain against normalized (or the older init against the newer)."""
    pairs = [step.runs for step in BATCH_NORM.steps]
    assert pairs[0] == ("digits-sigmoid", "digits-batchnorm")
    assert ("relu-lr-high", "relu-lr-high-batchnorm") in pairs
    assert pairs.index(("glorot-standard", "glorot-xavier")) < pairs.index(
        ("digits-relu30-xavier", "digits-relu30-he")
    )
    assert pairs[-1] == ("digits-small", "digits-small-batchnorm")
    assert all(step.view == "compare" for step in BATCH_NORM.steps)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"runs": ("no-such-preset",)}, "unknown preset 'no-such-preset'"),
        ({"runs": ()}, "shows 0 runs"),
        ({"runs": ("relu-he",) * 5}, "shows 5 runs"),
        ({"view": "gallery"}, "unknown view 'gallery'"),
        ({"view": "ratio"}, "the ratio view needs two runs"),
        ({"metric": "loss"}, "unknown metric 'loss'"),
        ({"text": ""}, "needs a title and a text"),
    ],
)
def test_lessons_check_names_what_is_wrong(change: dict[str, object], message: str) -> None:
    bad = Lesson("bad", "Bad", "", (STEP, replace(STEP, **change)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lesson 'bad', step 2") as error:
        check(bad)
    assert message in str(error.value)
    with pytest.raises(ValueError, match="no steps"):
        check(Lesson("empty", "Empty", "", ()))


@functools.cache
def first_step(preset: str) -> StepRecord:
    torch.set_num_threads(1)
    return next(Trainer(BY_ID[preset].config).records())


def decades(a: float | None, b: float | None) -> float:
    assert a is not None and b is not None
    return math.log10(a / b)


def step_of(title: str) -> LessonStep:
    return next(s for s in GRADIENT_FLOW.steps if s.title.startswith(title))


def test_lesson_vanishing_fades_many_decades_and_the_fixes_do_not() -> None:
    metric = step_of("The vanishing").metric
    sigmoid = first_step("sigmoid-naive").layers[metric]
    assert decades(sigmoid[-2], sigmoid[0]) > 4  # top block over block1: many decades
    for fix in ("tanh-xavier", "batchnorm"):
        values = first_step(fix).layers[metric]
        assert decades(values[-2], values[0]) < 1  # within a factor of ten, or growing


def test_lesson_ratio_of_relu_he_grows_towards_the_input() -> None:
    step = step_of("ReLU with He")
    a, b = (first_step(p).layers[step.metric] for p in step.runs)
    at_input, at_readout = decades(b[0], a[0]), decades(b[-1], a[-1])
    assert at_input > at_readout + 3 and at_input > 4


def test_lesson_residual_first_block_gets_more_than_the_shallower_net() -> None:
    step = step_of("Residual")
    shallow, deep = (first_step(p) for p in step.runs)
    assert len(deep.layers[step.metric]) > len(shallow.layers[step.metric])
    assert decades(deep.layers[step.metric][0], shallow.layers[step.metric][0]) > 0.3


def test_lesson_exploding_signal_grows_towards_the_input_then_overflows() -> None:
    step = step_of("The other way")
    healthy, exploding = (first_step(p).layers[step.metric] for p in step.runs)
    ratio = [decades(e, h) for h, e in zip(healthy, exploding, strict=True)]
    assert all(a > b for a, b in itertools.pairwise(ratio)), ratio  # deepening towards block1
    assert abs(ratio[-1]) < 0.3 and ratio[0] > 1.3  # ~1x at the readout, ~40x at block1
    result = train(BY_ID["exploding"].config)
    assert result.status == "diverged" and result.steps_done <= 10  # "within a few steps"


def test_lesson_clipping_bounds_the_applied_update() -> None:
    """Clipping the total norm to c bounds each layer's update by lr x c under SGD."""
    step = step_of("The cure")
    plain, clipped = (first_step(p) for p in step.runs)
    training = BY_ID[step.runs[1]].config.training
    bound = training.lr * training.clip_value
    ratio, weights = clipped.layers[step.metric], clipped.layers["weight_norm"]
    for r, w, r_plain in zip(ratio, weights, plain.layers[step.metric], strict=True):
        assert r is not None and w is not None and r_plain is not None
        assert r * w <= bound * (1 + 1e-4)
        # SGD's clipped step is the plain one scaled by clip_value / ||g||, in every layer
        assert plain.grad_norm_total is not None
        assert r_plain / r == pytest.approx(plain.grad_norm_total / training.clip_value, rel=1e-3)
