"""Batched statistics: row moments (accurate on near-constant rows), row histograms (against
torch.histc, non-finite rows), norms by parameter shape group (against per-tensor norms)."""

from __future__ import annotations

import math

import pytest
import torch
from depthscope.stats import Buffers, WeightGroups, histograms, moments_


def test_stats_moments_match_float64_reference() -> None:
    x = torch.randn(5, 1000) * torch.arange(1, 6).unsqueeze(1) + 3
    mean, std = moments_(x.clone())
    ref = x.double()
    assert torch.allclose(mean.double(), ref.mean(1), rtol=1e-6)
    assert torch.allclose(std.double(), ref.std(1, unbiased=False), rtol=1e-5)


def test_stats_moments_stay_accurate_when_activations_collapse() -> None:
    """A deep sigmoid net's layer: 0.5 plus noise of 1e-4. E[x²] − E[x]² in float32 would
    lose every digit here."""
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 1e-4 * torch.randn(3, 50_000, generator=g)
    _, std = moments_(x.clone())
    ref = x.double().std(1, unbiased=False)
    assert torch.allclose(std.double(), ref, rtol=1e-4)
    naive = ((x**2).mean(1) - x.mean(1) ** 2).clamp_min(0).sqrt()
    assert not torch.allclose(naive.double(), ref, rtol=1e-2)  # why the centring matters


def test_stats_histograms_match_histc() -> None:
    x = torch.randn(4, 777) * torch.tensor([[1.0], [1e-3], [50.0], [2.0]])
    lo, hi, counts = histograms(x, 32, Buffers())
    for row in range(4):
        r = x[row]
        assert float(lo[row]) == float(r.min()) and float(hi[row]) == float(r.max())
        expected = torch.histc(r, bins=32, min=float(r.min()), max=float(r.max()))
        assert counts[row].tolist() == expected.long().tolist()


def test_stats_histograms_of_a_constant_row_put_everything_in_one_bin() -> None:
    lo, hi, counts = histograms(torch.full((1, 10), 0.25), 8, Buffers())
    assert float(lo[0]) == float(hi[0]) == 0.25
    assert counts[0].tolist() == [10] + [0] * 7


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_stats_histograms_leave_non_finite_rows_empty(bad: float) -> None:
    x = torch.randn(3, 20)
    x[1, 5] = bad
    lo, hi, counts = histograms(x, 8, Buffers())
    assert math.isnan(float(lo[1])) and math.isnan(float(hi[1]))
    assert counts[1].sum() == 0
    assert counts[0].sum() == counts[2].sum() == 20


def test_stats_weight_groups_norms_in_list_order() -> None:
    # (4, 3) and (3, 4) share a group by size, through a view
    params = [torch.randn(4, 3), torch.randn(4, 4), torch.randn(7), torch.randn(4, 4)]
    params += [torch.randn(3, 4), torch.randn(4, 4), torch.randn(7)]
    grads = [torch.randn_like(p) for p in params]
    before = [p.clone() for p in params]
    groups = WeightGroups(params)
    groups.before_update(grads)
    for p, g in zip(params, grads, strict=True):  # an "optimizer step"
        p.sub_(0.1 * g)
    norms = groups.norms()
    assert torch.allclose(norms[0], torch.stack([g.norm() for g in grads]))
    assert torch.allclose(norms[1], torch.stack([b.norm() for b in before]))
    assert torch.allclose(norms[2], torch.stack([0.1 * g.norm() for g in grads]), rtol=1e-4)


def test_stats_weight_groups_copy_gradients_before_clipping() -> None:
    params = [torch.ones(2, 2), torch.ones(2, 2)]
    grads = [torch.full((2, 2), 3.0), torch.full((2, 2), 4.0)]
    groups = WeightGroups(params)
    groups.before_update(grads)
    grads[0].mul_(0)  # clipping in place afterwards must not change the recorded norm
    assert groups.norms()[0].tolist() == [6.0, 8.0]


def test_stats_weight_groups_gradients_only() -> None:
    params = [torch.randn(5), torch.randn(5), torch.randn(2)]
    grads = [torch.randn_like(p) for p in params]
    groups = WeightGroups(params, track_updates=False)
    groups.before_update(grads)
    norms = groups.norms()
    assert norms.shape == (1, 3)
    assert torch.allclose(norms[0], torch.stack([g.norm() for g in grads]))


def test_stats_buffers_are_reused_for_the_same_shape() -> None:
    scratch = Buffers()
    like = torch.zeros(3)
    first = scratch.get("a", (2, 3), like)
    assert scratch.get("a", (2, 3), like) is first
    assert scratch.get("a", (3, 3), like) is not first
