"""The order-to-chaos scan at initialization: over a grid of (sigma_w, sigma_b), one forward
and backward pass per cell, no training, measuring how the backpropagated signal and the
activations' scale change over depth, beside the mean-field chi_1 and the critical line.

Every cell's network is W_l = sigma_w W0_l, b_l = sigma_b b0_l for one shared draw of W0_l
(entries N(0, 1/width)) and b0_l (N(0, 1)): a scaled_normal init at that cell, with the same
random numbers for every cell (so neighbouring cells differ by their scales alone, not by
noise). Inputs are N(0, 1) in `width` dimensions, so q_1 = sigma_w^2 + sigma_b^2 as the
theory assumes. The signal sent back from the last block is a fixed N(0, 1) vector per input
(the loss sum(h_D * v)), so the measured ratio is that of the network, not of a readout.
Cells are stacked on a leading dimension and computed in chunks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from depthscope.analysis.gaussian import PiecewiseLinear
from depthscope.analysis.theory import activation, critical_point, fixed_points
from depthscope.engine.activations import ACTIVATIONS

SCAN_BATCH = 8  # inputs per cell: the weights, shared by all, dominate the noise
# cells x depth x width^2: the 16 x 11 grid at depth 30, width 256 is 3.5e8
MAX_SCAN_WORK = 4e8
MAX_SCAN_CELLS = 1024
CHUNK_FLOATS = 4_000_000  # activations held for one chunk's backward pass
CRITICAL_LINE_POINTS = 41


def scan_work(cells: int, depth: int, width: int) -> float:
    return float(cells) * depth * float(width) ** 2


def scan_limit_error(cells: int, depth: int, width: int) -> str | None:
    """Why a scan of this size is refused (naming the limit), or None."""
    if cells > MAX_SCAN_CELLS:
        return f"scan has {cells} cells, limit {MAX_SCAN_CELLS}"
    work = scan_work(cells, depth, width)
    if work > MAX_SCAN_WORK:
        return (
            f"scan budget exceeded: cells x depth x width^2 = {cells} x {depth} x {width}^2 = "
            f"{work:.3g}, limit {MAX_SCAN_WORK:.3g}; use fewer cells, a shallower or narrower net"
        )
    return None


def _finite(values: Tensor | np.ndarray[Any, Any]) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def _measure(
    name: str,
    weights: list[Tensor],
    biases: list[Tensor],
    x: Tensor,
    v: Tensor,
    sw: Tensor,
    sb: Tensor,
) -> tuple[Tensor, Tensor]:
    """ln(||dL/dh_1|| / ||dL/dh_D||) and std(h_D) for a chunk of cells (sw, sb: [cells])."""
    module = ACTIVATIONS[name].make()
    h = x.expand(len(sw), *x.shape).detach().requires_grad_()  # a leaf: the graph starts here
    scale_w, scale_b = sw[:, None, None], sb[:, None, None]
    with torch.enable_grad():
        first: Tensor | None = None
        for w, b in zip(weights, biases, strict=True):
            h = module(scale_w * (h @ w.T) + scale_b * b)
            if first is None:
                first = h
        assert first is not None
        loss = (h * v).sum()
        inputs = [first] if first is h else [first, h]
        grads = torch.autograd.grad(loss, inputs)
    last_grad = grads[-1].flatten(1).norm(dim=1)
    ratio = torch.log(grads[0].flatten(1).norm(dim=1) / last_grad)
    return ratio.detach(), h.detach().flatten(1).std(dim=1)


@dataclass(frozen=True)
class Scan:
    """Rows follow sigma_b, columns sigma_w. `critical_line`: sigma_w on the line chi_1 = 1
    at each of `critical_sigma_b` (None where the line does not reach)."""

    activation: str
    depth: int
    width: int
    sigma_w: list[float]
    sigma_b: list[float]
    log_grad_ratio: list[list[float | None]]
    last_act_std: list[list[float | None]]
    chi1: list[list[float | None]]
    predicted_log_grad_ratio: list[list[float | None]]
    critical_sigma_b: list[float]
    critical_sigma_w: list[float | None]
    seconds: float

    def to_wire(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _theory(
    name: str, depth: int, sw: Sequence[float], sb: Sequence[float]
) -> tuple[list[float | None], list[float | None]]:
    """chi_1 and the mean-field ln(||dL/dh_1|| / ||dL/dh_D||) for each cell."""
    act = activation(name)
    sw2, sb2 = np.square(sw), np.square(sb)
    q_star = fixed_points(act, sw2, sb2, sw2 + sb2)
    chis = sw2 * act.slope_moment(2, np.nan_to_num(q_star, nan=1.0))
    if not isinstance(act, PiecewiseLinear):  # the ReLU family's chi_1 needs no q*
        chis = np.where(np.isnan(q_star), np.nan, chis)
    q = sw2 + sb2
    log_gain = np.zeros(len(sw2))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(depth - 1):
            q = sw2 * act.moment(2, np.minimum(q, 1e300)) + sb2
            log_gain += 0.5 * np.log(sw2 * act.slope_moment(2, np.minimum(q, 1e300)))
    if isinstance(act, PiecewiseLinear):  # exact whatever q does
        log_gain = 0.5 * (depth - 1) * np.log(sw2 * act.slope_moment(2, q))
    return _finite(chis), _finite(log_gain)


def _critical_line(name: str, sigma_b: Sequence[float]) -> tuple[list[float], list[float | None]]:
    lo, hi = min(sigma_b), max(sigma_b)
    points = [float(b) for b in np.linspace(lo, hi, CRITICAL_LINE_POINTS if hi > lo else 1)]
    line: list[float | None] = []
    for b in points:
        critical = critical_point(name, b * b)
        line.append(None if critical is None else math.sqrt(critical.sigma_w2))
    return points, line


def init_scan(
    name: str,
    depth: int,
    width: int,
    sigma_w: Sequence[float],
    sigma_b: Sequence[float],
    seed: int = 0,
) -> Scan:
    """Measure every (sigma_w, sigma_b) cell; raises ValueError beyond the limits."""
    activation(name)  # an unknown name fails before any work
    refused = scan_limit_error(len(sigma_w) * len(sigma_b), depth, width)
    if refused:
        raise ValueError(refused)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like a run's worker: on a busy machine more threads only contend
    try:
        return _scan(name, depth, width, sigma_w, sigma_b, seed)
    finally:
        torch.set_num_threads(threads)


def _scan(
    name: str, depth: int, width: int, sigma_w: Sequence[float], sigma_b: Sequence[float], seed: int
) -> Scan:
    started = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(width, width, generator=g) / math.sqrt(width) for _ in range(depth)]
    biases = [torch.randn(width, generator=g) for _ in range(depth)]
    x = torch.randn(SCAN_BATCH, width, generator=g)
    v = torch.randn(SCAN_BATCH, width, generator=g)
    cells_w = [w for _ in sigma_b for w in sigma_w]
    cells_b = [b for b in sigma_b for _ in sigma_w]
    chunk = max(1, int(CHUNK_FLOATS // (3 * SCAN_BATCH * width * depth)))
    ratios, stds = [], []
    for start in range(0, len(cells_w), chunk):
        sw = torch.tensor(cells_w[start : start + chunk], dtype=torch.float32)
        sb = torch.tensor(cells_b[start : start + chunk], dtype=torch.float32)
        ratio, std = _measure(name, weights, biases, x, v, sw, sb)
        ratios += _finite(ratio)
        stds += _finite(std)
    chis, predicted = _theory(name, depth, cells_w, cells_b)
    line_b, line_w = _critical_line(name, sigma_b)
    cols = len(sigma_w)

    def grid(values: list[float | None]) -> list[list[float | None]]:
        return [values[i : i + cols] for i in range(0, len(values), cols)]

    return Scan(
        activation=name,
        depth=depth,
        width=width,
        sigma_w=[float(w) for w in sigma_w],
        sigma_b=[float(b) for b in sigma_b],
        log_grad_ratio=grid(ratios),
        last_act_std=grid(stds),
        chi1=grid(chis),
        predicted_log_grad_ratio=grid(predicted),
        critical_sigma_b=line_b,
        critical_sigma_w=line_w,
        seconds=time.perf_counter() - started,
    )
