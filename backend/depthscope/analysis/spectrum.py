"""Singular values of the hidden-to-hidden Jacobian J = dh_D / dh_1 at a few inputs, and what
free probability predicts for them at initialization (dynamical isometry: Saxe et al. 2014,
Pennington et al. 2017).

J is accumulated block by block, J <- J_block(h) J, from each block's parts: the weight
matrix, the activation's derivative from the registry and the normalization's Jacobian
(batch norm with its running statistics: one input's Jacobian is not defined in batch mode).
Memory stays one width x width matrix per input and the cost is about
inputs x (depth - 1) x width^3 multiply-adds; skip connections add their Jacobians.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from depthscope.analysis.gaussian import Array
from depthscope.analysis.predict import LayerInit, layer_q
from depthscope.analysis.theory import activation
from depthscope.engine.activations import ACTIVATIONS, Derivative
from depthscope.engine.model import Block, DeepNet

SPECTRUM_INPUTS = 4  # inputs the Jacobian is evaluated at
# inputs x (depth - 1) x width^3: about one second of one CPU core; bigger networks are skipped
MAX_SPECTRUM_WORK = 2e9


def spectrum_work(depth: int, width: int, inputs: int = SPECTRUM_INPUTS) -> float:
    return float(inputs) * max(depth - 1, 0) * float(width) ** 3


def spectrum_skip_reason(depth: int, width: int, inputs: int = SPECTRUM_INPUTS) -> str | None:
    """Why the spectrum of such a network is not computed, or None when it is."""
    if depth < 2:
        return "the network has one hidden block: dh_D/dh_1 is the identity"
    work = spectrum_work(depth, width, inputs)
    if work > MAX_SPECTRUM_WORK:
        return (
            f"the Jacobian would cost inputs x (depth - 1) x width^3 = {inputs} x {depth - 1} x "
            f"{width}^3 = {work:.3g}, above the limit {MAX_SPECTRUM_WORK:.3g}"
        )
    return None


def _norm_jacobian(norm: nn.Module | None, z: Tensor, jac: Tensor) -> Tensor:
    """d norm(z) @ jac for z [inputs, n] and jac [inputs, n, m], in eval mode (None: none)."""
    if norm is None or isinstance(norm, nn.Identity):
        return jac
    if isinstance(norm, nn.BatchNorm1d):  # running statistics: an affine map per unit
        assert norm.running_var is not None
        scale = (norm.running_var + norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight
        return scale[None, :, None] * jac
    if isinstance(norm, nn.LayerNorm):  # (1/s)(dz - mean(dz) - zhat mean(zhat dz))
        mean = z.mean(-1, keepdim=True)
        inv = (z.var(-1, unbiased=False, keepdim=True) + norm.eps).rsqrt()
        zhat = (z - mean) * inv
        centered = jac - jac.mean(1, keepdim=True)
        along = zhat.unsqueeze(2) * (zhat.unsqueeze(1) @ centered) / z.shape[-1]
        out = inv.unsqueeze(2) * (centered - along)
        return out if norm.weight is None else norm.weight[None, :, None] * out
    raise TypeError(f"no Jacobian for {type(norm).__name__}")


def _block(block: Block, slope: Derivative, x: Tensor, jac: Tensor) -> tuple[Tensor, Tensor]:
    """A block's output and its Jacobian times `jac`, in the order of Block.parts():
    Linear -> [pre-norm] -> activation -> [post-norm] (None where there is none)."""
    linear, pre_norm, act, post_norm = block.parts()
    z = linear(x)
    u = z if pre_norm is None else pre_norm(z)
    a = u if act is None else act(u)
    jac = _norm_jacobian(pre_norm, z, torch.matmul(block.linear.weight, jac))
    jac = slope(u.unsqueeze(0), [block.act]).squeeze(0).unsqueeze(2) * jac
    h = a if post_norm is None else post_norm(a)
    return h, _norm_jacobian(post_norm, a, jac)


def _after_first_block(model: DeepNet, h1: Tensor) -> Tensor:
    """dh_D/dh_1 at each row of h1 ([inputs, width] -> [inputs, width, width]): blocks 2..D
    with the skips DeepNet.forward adds (a skip spans blocks j+1..j+k for j = 1, 1+k, ...)."""
    k = model.residual_every
    slope = ACTIVATIONS[model.activation].derivative
    x = h1
    jac = torch.eye(h1.shape[1], dtype=h1.dtype, device=h1.device).expand(h1.shape[0], -1, -1)
    skip, skip_jac = (x, jac) if k else (None, None)
    for i, block in enumerate(model.block_list[1:], start=2):
        x, jac = _block(block, slope, x, jac)
        if k and (i - 1) % k == 0:
            assert skip is not None and skip_jac is not None
            x, jac = x + skip, jac + skip_jac
            skip, skip_jac = x, jac
    return jac


def singular_values(model: DeepNet, inputs: Tensor) -> list[float] | None:
    """The singular values of dh_D/dh_1 at each input (rows of `inputs`), pooled and sorted
    from the largest; None if the Jacobian is not finite (a diverged network). The model is
    put in eval mode for the duration."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            jac = _after_first_block(model, model.blocks[0](inputs)).double()
            if not bool(torch.isfinite(jac).all()):
                return None
            values = torch.linalg.svdvals(jac).flatten()
    finally:
        model.train(was_training)
    values = values.sort(descending=True).values
    if values.device.type != "cpu":  # one transfer of its own on a GPU; none on the CPU
        values = values.cpu()
    result: list[float] = values.numpy().tolist()
    return result


@dataclass(frozen=True)
class SpectrumTheory:
    """Mean and variance of the squared singular values of J at step 0 (None where the theory
    does not apply, with the reason)."""

    applicable: bool
    mean: float | None = None
    variance: float | None = None
    layers: int = 0  # factors in the product
    reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def spectrum_theory(
    name: str, layers: Sequence[LayerInit], input_q: Sequence[float] = (1.0,)
) -> SpectrumTheory:
    """J = D_D W_D ... D_2 W_2 (D_l = diag phi'(z_l)). Its squared singular values have mean
    prod_l chi_l, and, the factors being asymptotically free, a normalized variance that adds
    up over the factors: mu_2 / mu_1^2 - 1 for each D_l^2 (mu_k = E[phi'^2k]) plus 1 for each
    W_l^T W_l with i.i.d. entries (Marchenko-Pastur) or 0 for an orthogonal W_l."""
    if len(layers) < 2:
        return SpectrumTheory(False, reason="one hidden block: J is the identity")
    act = activation(name)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        q: Array = layer_q(act, layers, input_q)[1:]
        mu1 = act.slope_moment(2, q.ravel()).reshape(q.shape)
        mu2 = act.slope_moment(4, q.ravel()).reshape(q.shape)
        spread = np.array([[0.0 if layer.orthogonal else 1.0] for layer in layers[1:]])
        sigma_w2 = np.array([[layer.sigma_w2] for layer in layers[1:]])
        mean = np.prod(sigma_w2 * mu1, axis=0)  # per input
        normalized = np.sum(mu2 / mu1**2 - 1 + spread, axis=0)
        second = mean**2 * (1 + normalized)
        pooled_mean = float(mean.mean())
        pooled_var = float(second.mean()) - pooled_mean**2
    return SpectrumTheory(True, _finite(pooled_mean), _finite(pooled_var), len(layers) - 1)
