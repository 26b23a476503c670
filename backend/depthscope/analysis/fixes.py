"""The fixes a diagnosis suggests, each naming the config field to change, and which of them
the evidence points to."""

from __future__ import annotations

from depthscope.analysis.trace import Trace

SATURATING = ("sigmoid", "tanh")  # flat on both sides: the ReLU family's zero side is not this
RELU_FAMILY = ("relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "silu")

RELU_HE = "switch to the ReLU family with He init (model.activation relu, model.init he_normal)"
HE_INIT = "use He init, which is matched to the ReLU family (model.init he_normal)"
XAVIER_INIT = "use Xavier init, matched to tanh and sigmoid (model.init xavier_normal)"
BATCHNORM = "add batch normalization (model.norm batchnorm)"
RESIDUAL = "add residual connections (model.residual_every 2)"
CLIP = "clip the gradient norm (training.clip norm)"
SMALLER_LR = "lower the learning rate (training.lr)"
LARGER_LR = "raise the learning rate (training.lr) or train for more steps"
LEAKY = "use leaky ReLU, whose units cannot die (model.activation leaky_relu)"


def fixes_for_fading(trace: Trace) -> list[str]:
    act, init = trace.setting("model", "activation"), trace.setting("model", "init")
    fixes = []
    if act in SATURATING:
        fixes.append(RELU_HE)
    elif act in RELU_FAMILY and init not in ("he_normal", "he_uniform"):
        fixes.append(HE_INIT)
    if trace.setting("model", "norm", "none") == "none":
        fixes.append(BATCHNORM)
    if not trace.setting("model", "residual_every", 0):
        fixes.append(RESIDUAL)
    return fixes


def fixes_for_growth(trace: Trace) -> list[str]:
    act = trace.setting("model", "activation")
    fixes = [HE_INIT if act in RELU_FAMILY else XAVIER_INIT]
    if trace.setting("training", "clip", "none") == "none":
        fixes.append(CLIP)
    fixes.append(SMALLER_LR)
    if trace.setting("model", "norm", "none") == "none":
        fixes.append(BATCHNORM)
    return fixes
