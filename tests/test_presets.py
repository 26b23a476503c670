"""Presets: valid configs, unique ids, and each pair behaves as its description says: the
vanishing networks stay at chance while their fixes learn, exploding diverges, clipping saves it."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from depthscope import METRICS, RunConfig, RunResult, StepRecord, train
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


FORWARD = {"weight_norm", "preact_mean", "preact_std", "act_mean", "act_std", "saturation", "dead"}


def test_presets_show_a_known_metric_first() -> None:
    assert all(p.metric in METRICS for p in PRESETS)
    assert BY_ID["exploding"].metric == BY_ID["exploding-clipped"].metric == "act_grad_norm"


def test_exploding_preset_brightens_towards_the_input_and_names_where_it_overflowed() -> None:
    # Issue 16: the preset opens on act_grad_norm, which grows towards the input as the help
    # text says; the divergence names where the forward pass overflowed, not a NaN gradient
    # that followed from it.
    torch.set_num_threads(1)
    records: list[StepRecord] = []
    result = train(BY_ID["exploding"].config, records.append)
    assert result.status == "diverged" and result.divergence is not None
    signal = records[0].layers["act_grad_norm"]
    assert all(a > b for a, b in itertools.pairwise(signal)), signal  # grows towards the input
    assert signal[0] > 10 * signal[-1]
    where, last = result.divergence, records[-1]
    assert last.step == where.step and where.metric in FORWARD and where.layer_index is not None
    assert last.layers[where.metric][where.layer_index] is None
    below = range(where.layer_index)  # every forward value below the named layer is finite
    assert all(last.layers[m][i] is not None for m in FORWARD for i in below)
    assert all(v is None for v in last.layers["grad_norm"])  # block1's gradient is NaN too


def test_exploding_clipped_trains_without_zero_loss_stretches() -> None:
    # Issue 16: the clipped preset used to reach a loss of exactly 0, with every gradient exactly
    # 0, in 122 of its 300 steps. Clipping is now the cure: every step learns something.
    torch.set_num_threads(1)
    records: list[StepRecord] = []
    result = train(BY_ID["exploding-clipped"].config, records.append)
    assert result.status == "completed" and len(records) == 300
    assert all(r.loss is not None and r.loss > 0 for r in records)
    assert all(g is not None and g > 0 for r in records for g in r.layers["grad_norm"])
    clipped = [r.step for r in records if r.clipped]
    assert clipped[:10] == list(range(10)) and len(clipped) < 250  # the cure, then training
    assert result.final["val_accuracy"] > 0.95 and result.final["loss"] < records[0].loss / 100
