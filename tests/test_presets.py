"""Presets: valid configs, unique ids, and each pair behaves as its description says: the
vanishing networks stay at chance while their fixes learn, exploding diverges, clipping saves it."""

from __future__ import annotations

import functools

import pytest
import torch
from depthscope import RunConfig, RunResult, train
from depthscope.presets import BY_ID, PRESETS

REQUIRED = {
    "sigmoid-naive",
    "tanh-xavier",
    "relu-he",
    "relu-xavier-deep",
    "leaky-relu",
    "batchnorm",
    "residual",
    "exploding",
    "exploding-clipped",
    # the batch-norm story (papers.py)
    "digits-sigmoid",
    "digits-batchnorm",
    "relu-lr-high",
    "relu-lr-high-batchnorm",
    "glorot-standard",
    "glorot-xavier",
    "digits-relu30-xavier",
    "digits-relu30-he",
    "digits-small",
    "digits-small-batchnorm",
}


def test_presets_cover_the_story_with_valid_configs() -> None:
    assert set(BY_ID) >= REQUIRED and len(BY_ID) == len(PRESETS)
    for preset in PRESETS:
        wire = preset.to_wire()
        assert RunConfig.model_validate(wire["config"]) == preset.config
        assert preset.title and len(preset.description) > 80


def test_presets_relu_xavier_deep_is_depth_30() -> None:
    model = BY_ID["relu-xavier-deep"].config.model
    assert (model.depth, model.activation, model.init) == (30, "relu", "xavier_normal")


def test_presets_exploding_diverges_and_clipping_prevents_it() -> None:
    torch.set_num_threads(1)
    exploding = train(BY_ID["exploding"].config)
    assert exploding.status == "diverged" and exploding.divergence is not None
    clipped_config = BY_ID["exploding-clipped"].config
    short = clipped_config.model_copy(
        update={"training": clipped_config.training.model_copy(update={"steps": 60})}
    )
    clipped = train(short)
    assert clipped.status == "completed" and clipped.steps_done == 60


@functools.cache
def trained(preset_id: str) -> RunResult:
    torch.set_num_threads(1)
    return train(BY_ID[preset_id].config)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stuck", "fixed"),
    [
        ("sigmoid-naive", "batchnorm"),  # batch normalization rescues the deep sigmoid net
        ("sigmoid-naive", "tanh-xavier"),
        ("relu-xavier-deep", "relu-he"),
        ("sigmoid-naive", "residual"),
    ],
)
def test_presets_vanishing_stays_at_chance_while_the_fix_learns(stuck: str, fixed: str) -> None:
    chance, learned = trained(stuck), trained(fixed)
    assert chance.status == learned.status == "completed"
    assert chance.final["val_loss"] > 0.65  # ln 2 ≈ 0.693: two balanced classes, no signal
    assert learned.final["val_loss"] < 0.2 and learned.final["val_accuracy"] > 0.9
