"""The probe: every per-layer statistic of DESIGN §5 at a recorded step, computed on the device.

Same-shape hidden layers are stacked into one [layers, batch, units] tensor so each statistic is
one reduction, weight-shaped quantities go through PyTorch's fused `_foreach_norm`, and all the
numbers of a step leave the device in ONE transfer (`.tolist()` of one flat tensor). Standard
deviations are population ones (divided by n), taken as the norm of centred values: on the CPU
that is faster than `std_mean`.

Lifecycle of a recorded step, driven by the trainer:
    probe.attach()          before the forward pass: the model starts filling `Taps`
    probe.after_forward()   keep the gradients of every block output (dL/dh_l)
    probe.before_update()   after backward, before clipping: grad norms, a copy of the weights
    probe.finish(...)       after the optimizer step: one transfer, returns the StepRecord
The probe detaches from the model after each step and when closed (it is a context manager).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import TracebackType

import torch
from torch import Tensor, nn

from depthscope.layers import ACTIVATIONS
from depthscope.model import DeepNet, Taps
from depthscope.records import HISTOGRAM_KINDS, METRICS, Histogram, StepRecord, finite

SATURATION_FRACTION = 0.05  # f'(u) below 5% of max f' counts as saturated
HISTOGRAM_BINS = 32
TINY = 1e-30


def moments(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population std of each row of `x` (any trailing shape), as [rows] tensors."""
    flat = x.flatten(1)
    n = flat.shape[1]
    mean = flat.sum(1) / n
    std = torch.linalg.vector_norm(flat - mean.unsqueeze(1), dim=1) / math.sqrt(n)
    return mean, std


def histograms(rows: Sequence[Tensor], bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """Equal-width histograms of each row of each [rows, n] tensor, between the row's own min
    and max, with one `bincount` per tensor. Non-finite entries are left out."""
    los, his, counts = [], [], []
    for x in rows:
        ok = torch.isfinite(x)
        lo = torch.where(ok, x, math.inf).amin(1)
        hi = torch.where(ok, x, -math.inf).amax(1)
        lo = torch.where(torch.isfinite(lo), lo, 0.0)
        hi = torch.where(torch.isfinite(hi), hi, 0.0)
        span = (hi - lo).clamp_min(TINY).unsqueeze(1)
        idx = ((x - lo.unsqueeze(1)) / span * bins).nan_to_num(0).clamp(0, bins - 1).long()
        row_offset = torch.arange(x.shape[0], device=x.device).unsqueeze(1) * bins
        # Send non-finite entries to an overflow bin past the end, then drop it.
        idx = torch.where(ok, idx + row_offset, x.shape[0] * bins)
        c = torch.bincount(idx.flatten(), minlength=x.shape[0] * bins + 1)[:-1]
        los.append(lo)
        his.append(hi)
        counts.append(c.reshape(x.shape[0], bins))
    return torch.cat(los), torch.cat(his), torch.cat(counts)


class Probe:
    def __init__(self, model: DeepNet, histogram_bins: int = HISTOGRAM_BINS) -> None:
        self.model = model
        self.bins = histogram_bins
        self.weights = [layer.weight for layer in model.linears]
        self.acts: list[nn.Module] = [block.act for block in model.block_list]
        self.activation = ACTIVATIONS[model.activation]
        self.previous = [torch.empty_like(w) for w in self.weights]
        self.taps: Taps | None = None
        self._grad_norms: Tensor | None = None

    @property
    def layer_names(self) -> list[str]:
        return self.model.layer_names

    # -- lifecycle -----------------------------------------------------------------------
    def attach(self) -> None:
        self.taps = Taps()
        self.model.taps = self.taps

    def after_forward(self) -> None:
        taps = self._require_taps()
        for h in taps.h:
            h.retain_grad()
        assert taps.logits is not None
        taps.logits.retain_grad()

    def before_update(self) -> None:
        grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in self.weights]
        self._grad_norms = torch.stack(torch._foreach_norm(grads))
        with torch.no_grad():
            torch._foreach_copy_(self.previous, self.weights)

    def detach(self) -> None:
        self.model.taps = None
        self.taps = None

    def __enter__(self) -> Probe:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def _require_taps(self) -> Taps:
        if self.taps is None:
            raise RuntimeError("probe is not attached")
        return self.taps

    # -- statistics ----------------------------------------------------------------------
    @torch.no_grad()
    def layer_metrics(self) -> Tensor:
        """[len(METRICS), layers] tensor in METRICS order; still on the device."""
        taps = self._require_taps()
        assert taps.logits is not None and taps.logits.grad is not None
        assert self._grad_norms is not None
        z, u, h = torch.stack(taps.z), torch.stack(taps.u), torch.stack(taps.h)
        g = torch.stack([t.grad if t.grad is not None else torch.zeros_like(t) for t in taps.h])
        logits, dlogits = taps.logits.unsqueeze(0), taps.logits.grad.unsqueeze(0)

        weight_norm = torch.stack(torch._foreach_norm(self.weights))
        torch._foreach_sub_(self.previous, self.weights)
        update_norm = torch.stack(torch._foreach_norm(self.previous))
        act_grad_norm = torch.cat(
            [
                torch.linalg.vector_norm(g.flatten(1), dim=1),
                torch.linalg.vector_norm(dlogits.flatten(1), dim=1),
            ]
        )
        act_mean, act_std = (
            torch.cat(pair) for pair in zip(moments(h), moments(logits), strict=True)
        )
        pre_mean, pre_std = (
            torch.cat(pair) for pair in zip(moments(z), moments(logits), strict=True)
        )
        saturation, dead = self._saturation_and_dead(u)
        safe_w = weight_norm.clamp_min(TINY)
        by_name = {
            "grad_norm": self._grad_norms,
            "act_grad_norm": act_grad_norm,
            "grad_to_weight": self._grad_norms / safe_w,
            "update_ratio": update_norm / safe_w,
            "weight_norm": weight_norm,
            "act_mean": act_mean,
            "act_std": act_std,
            "preact_mean": pre_mean,
            "preact_std": pre_std,
            "saturation": saturation,
            "dead": dead,
        }
        return torch.stack([by_name[m].float() for m in METRICS])

    def _saturation_and_dead(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Hidden layers from f'(u); the readout is linear, so it is never saturated or dead."""
        derivative = self.activation.derivative(u, self.acts)
        threshold = SATURATION_FRACTION * self.activation.max_derivative(self.acts)
        saturated = (derivative < threshold).flatten(1).float().mean(1)
        dead = (derivative == 0).all(dim=1).float().mean(1)
        zero = saturated.new_zeros(1)
        return torch.cat([saturated, zero]), torch.cat([dead, zero])

    @torch.no_grad()
    def histogram_tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """lo, hi [kinds × layers] and counts [kinds × layers, bins], for h_l then dL/dh_l."""
        taps = self._require_taps()
        assert taps.logits is not None and taps.logits.grad is not None
        h = torch.stack(taps.h).flatten(1)
        g = torch.stack([t.grad if t.grad is not None else torch.zeros_like(t) for t in taps.h])
        rows = [h, taps.logits.reshape(1, -1), g.flatten(1), taps.logits.grad.reshape(1, -1)]
        return histograms(rows, self.bins)

    # -- one transfer ----------------------------------------------------------------------
    def finish(
        self,
        step: int,
        scalars: Sequence[Tensor],
        with_histograms: bool,
    ) -> StepRecord:
        """Build the step's record. `scalars` are 0-d tensors: loss, accuracy (NaN for
        regression), total grad norm, clipped (0/1)."""
        try:
            metrics = self.layer_metrics()
            parts = [
                torch.stack([s.detach().float().reshape(()) for s in scalars]),
                metrics.flatten(),
            ]
            if with_histograms:
                lo, hi, counts = self.histogram_tensors()
                parts += [lo.float(), hi.float(), counts.float().flatten()]
            flat: list[float] = torch.cat(parts).tolist()  # the one host transfer
        finally:
            self.detach()
        return self._unpack(step, flat, with_histograms)

    def _unpack(self, step: int, flat: list[float], with_histograms: bool) -> StepRecord:
        n_layers = len(self.weights)
        loss, accuracy, total, clipped = flat[:4]
        pos = 4
        layers: dict[str, list[float | None]] = {}
        for metric in METRICS:
            layers[metric] = [finite(v) for v in flat[pos : pos + n_layers]]
            pos += n_layers
        hists = None
        if with_histograms:
            rows = len(HISTOGRAM_KINDS) * n_layers
            lo, hi = flat[pos : pos + rows], flat[pos + rows : pos + 2 * rows]
            counts = flat[pos + 2 * rows :]
            hists = {}
            for k, kind in enumerate(HISTOGRAM_KINDS):
                layer_rows = range(k * n_layers, (k + 1) * n_layers)
                hists[kind] = Histogram(
                    lo=[finite(lo[r]) for r in layer_rows],
                    hi=[finite(hi[r]) for r in layer_rows],
                    counts=[
                        [int(c) for c in counts[r * self.bins : (r + 1) * self.bins]]
                        for r in layer_rows
                    ],
                )
        return StepRecord(
            step=step,
            loss=finite(loss),
            accuracy=finite(accuracy),
            grad_norm_total=finite(total),
            clipped=bool(clipped),
            layers=layers,
            histograms=hists,
        )
