"""Batched statistics: row moments (accurate on near-constant rows), row histograms (against
torch.histc, non-finite rows emptied on the host), norms by parameter shape group (against
per-tensor norms)."""

from __future__ import annotations

import math

import pytest
import torch
from depthscope.probe.stats import (
    Buffers,
    RowHistograms,
    RowMoments,
    WeightGroups,
    accuracy,
    histogram_views,
)
from depthscope.probe.transfer import histogram_size, read_histograms
from torch import Tensor


def moments(x: Tensor, centred: int, normed: int, first: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Run RowMoments once on a copy of x, summing every row, centring rows first .. centred
    and taking norms of rows first .. normed: (sums, norms, x as it left it)."""
    x = x.clone()
    sums, norms = torch.empty(x.shape[0]), torch.empty(normed - first)
    RowMoments(x, (0, x.shape[0]), (first, centred), (first, normed), sums, norms)()
    return sums, norms, x


def test_stats_moments_match_float64_reference() -> None:
    x = torch.randn(5, 1000) * torch.arange(1, 6).unsqueeze(1) + 3
    sums, norms, _ = moments(x, 5, 5)
    ref = x.double()
    assert torch.allclose(sums.double() / 1000, ref.mean(1), rtol=1e-6)
    assert torch.allclose(norms.double() / math.sqrt(1000), ref.std(1, unbiased=False), rtol=1e-5)


def test_stats_moments_centre_only_the_activation_rows() -> None:
    """Rows before the centred ones only get a sum (the health masks); rows past them keep
    their values, so their norm is about zero (dL/dh)."""
    x = torch.tensor([[1.0, 0.0], [1.0, 3.0], [3.0, 4.0]])
    sums, norms, after = moments(x, 2, 3, first=1)
    assert sums.tolist() == [1.0, 4.0, 7.0]
    assert norms.tolist() == [pytest.approx(math.sqrt(2)), 5.0]
    assert after.tolist() == [[1.0, 0.0], [-1.0, 1.0], [3.0, 4.0]]


def test_stats_moments_refuse_centring_rows_they_do_not_sum() -> None:
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="must be summed"):
        RowMoments(x, (1, 3), (0, 2), (0, 3), torch.empty(2), torch.empty(3))


def test_stats_moments_run_again_on_new_contents() -> None:
    x, sums, norms = torch.zeros(1, 4), torch.empty(1), torch.empty(1)
    step = RowMoments(x, (0, 1), (0, 1), (0, 1), sums, norms)
    for values in ([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]):
        x.copy_(torch.tensor([values]))
        step()
        assert float(sums[0]) == sum(values)
        assert float(norms[0]) == pytest.approx(
            math.sqrt(sum((v - sum(values) / 4) ** 2 for v in values))
        )


def test_stats_moments_stay_accurate_when_activations_collapse() -> None:
    """A deep sigmoid net's layer: 0.5 plus noise of 1e-4. E[x²] − E[x]² in float32 would
    lose every digit here."""
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 1e-4 * torch.randn(3, 50_000, generator=g)
    _, norms, _ = moments(x, 3, 3)
    ref = x.double().std(1, unbiased=False)
    assert torch.allclose(norms.double() / math.sqrt(50_000), ref, rtol=1e-4)
    naive = ((x**2).mean(1) - x.mean(1) ** 2).clamp_min(0).sqrt()
    assert not torch.allclose(naive.double(), ref, rtol=1e-2)  # why the centring matters


def histograms(
    x: Tensor, bins: int, scatter: bool = False, device: str = "cpu"
) -> list[tuple[float, float, list[int]]]:
    """RowHistograms on the device (off the CPU it always scatters), then read_histograms on
    the host."""
    x = x.to(device)
    rows = x.shape[0]
    out = torch.full((histogram_size(rows, bins),), math.nan, device=device)
    before = x.clone()
    RowHistograms(x.shape[1], bins, *histogram_views(out, rows, 0, rows), scatter=scatter)(x)
    assert torch.equal(x, before) or x.isnan().any()  # the input is left alone
    found = read_histograms(out.tolist(), x.shape[0], bins)
    return [
        (lo, hi, counts)
        for lo, hi, counts in zip(
            found.lo.tolist(), found.hi.tolist(), found.counts.tolist(), strict=True
        )
    ]


@pytest.mark.parametrize("scatter", [False, True], ids=["bincount", "scatter"])
def test_stats_histograms_match_histc(scatter: bool, device: str) -> None:
    """Both ways of counting: bincount (the CPU's) and the scatter-add used off the CPU,
    where bincount would sync with the host."""
    x = torch.randn(4, 777) * torch.tensor([[1.0], [1e-3], [50.0], [2.0]])
    for row, (lo, hi, counts) in enumerate(histograms(x, 32, scatter, device)):
        r = x[row]
        assert lo == float(r.min()) and hi == float(r.max())
        expected = torch.histc(r, bins=32, min=float(r.min()), max=float(r.max()))
        assert counts == expected.long().tolist()


def test_stats_histograms_of_a_constant_row_put_everything_in_one_bin() -> None:
    ((lo, hi, counts),) = histograms(torch.full((1, 10), 0.25), 8)
    assert lo == hi == 0.25
    assert counts == [10] + [0] * 7


@pytest.mark.parametrize("scatter", [False, True], ids=["bincount", "scatter"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_stats_histograms_leave_non_finite_rows_empty(
    bad: float, scatter: bool, device: str
) -> None:
    x = torch.randn(3, 20)
    x[1, 5] = bad
    found = histograms(x, 8, scatter, device)
    assert math.isnan(found[1][0]) and math.isnan(found[1][1])
    assert sum(found[1][2]) == 0
    assert sum(found[0][2]) == sum(found[2][2]) == 20


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
    out = torch.empty(groups.layout.size)
    groups.norms_(groups.slots(out))
    grad, weight, update = groups.layout.spread(out.tolist())
    assert grad == pytest.approx([float(g.norm()) for g in grads], rel=1e-6)
    assert weight == pytest.approx([float(b.norm()) for b in before], rel=1e-6)
    assert update == pytest.approx([0.1 * float(g.norm()) for g in grads], rel=1e-4)


def test_stats_weight_groups_copy_gradients_before_clipping() -> None:
    params = [torch.ones(2, 2), torch.ones(2, 2)]
    grads = [torch.full((2, 2), 3.0), torch.full((2, 2), 4.0)]
    groups = WeightGroups(params)
    groups.before_update(grads)
    grads[0].mul_(0)  # clipping in place afterwards must not change the recorded norm
    out = torch.empty(groups.layout.size)
    groups.norms_(groups.slots(out))
    assert groups.layout.spread(out.tolist())[0] == [6.0, 8.0]


def test_stats_buffers_are_reused_for_the_same_shape() -> None:
    scratch = Buffers()
    like = torch.zeros(3)
    first = scratch.get("a", (2, 3), like)
    assert scratch.get("a", (2, 3), like) is first
    assert scratch.get("a", (3, 3), like) is not first


def test_stats_accuracy_is_nan_for_regression() -> None:
    logits = torch.tensor([[0.0, 2.0], [3.0, 1.0], [0.0, 1.0]])
    assert float(accuracy(logits, torch.tensor([1, 0, 0]))) == pytest.approx(2 / 3)
    assert math.isnan(float(accuracy(logits, torch.zeros(3, 2))))
