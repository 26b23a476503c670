"""Presets: valid configs, unique ids, and the exploding/clipped pair behaves as described."""

from __future__ import annotations

import torch
from depthscope import RunConfig, train
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
