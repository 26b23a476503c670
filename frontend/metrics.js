/** The per-layer metrics of DESIGN §5: how each is coloured and what it tells you, in plain words. */

// scale: "log" = log10 of the value, "logabs" = log10 of |value| (the sign is dropped and the
// label says so), "linear" = fractions in [0, 1], where log10 would hide the interesting zeros.
export const METRICS = [
  {
    name: "grad_norm",
    title: "weight gradient norm ‖dL/dW‖",
    scale: "log",
    about:
      "How hard the loss pushes on this layer's weights. In a healthy net the column is roughly one " +
      "colour from bottom to top. A colour that fades steadily towards the input (bottom) means the " +
      "gradient shrinks by a similar factor at every layer it crosses back through: vanishing " +
      "gradients, so the early layers barely learn. dL/dW is the backpropagated signal times the " +
      "layer's input, so with weights that are too large it can brighten either way (the signal grows " +
      "towards the input, the activations towards the readout): act_grad_norm shows the exploding signal itself.",
  },
  {
    name: "act_grad_norm",
    title: "backpropagated signal ‖dL/dh‖",
    scale: "log",
    about:
      "The error signal arriving at each block's output on the way back. Backpropagation multiplies it by " +
      "one Jacobian per layer, so with saturating units (sigmoid, tanh) or badly scaled weights it decays " +
      "geometrically with depth: an evenly spaced fade in log colour. With weights that are too large it " +
      "grows instead: brightening towards the input (bottom) is the exploding case. ReLU with He init, " +
      "normalization and skip connections keep it level.",
  },
  {
    name: "grad_to_weight",
    title: "‖dL/dW‖ / ‖W‖",
    scale: "log",
    about:
      "Gradient size relative to the weights it changes: comparable across layers of different size. " +
      "Layers far below the others learn in relative terms far more slowly.",
  },
  {
    name: "update_ratio",
    title: "applied update ‖ΔW‖ / ‖W‖",
    scale: "log",
    about:
      "The relative change the optimizer actually made this step (after clipping, momentum, Adam " +
      "scaling). Around 1e-3 per step is a common rule of thumb; far below means a frozen layer, far " +
      "above means the learning rate is too large for that layer.",
  },
  {
    name: "weight_norm",
    title: "weight norm ‖W‖",
    scale: "log",
    about: "Size of each layer's weights; a norm that runs away over the steps often precedes divergence.",
  },
  {
    name: "act_mean",
    title: "activation mean (log10 of |mean|, sign dropped)",
    scale: "logabs",
    about:
      "Average output of the block. Sigmoid outputs sit around 0.5, never zero-centred, which biases the " +
      "next layer's gradients; a mean drifting away from zero with depth shows that shift.",
  },
  {
    name: "act_std",
    title: "activation spread (std)",
    scale: "log",
    about:
      "Spread of each block's output. It should stay of the same order through depth: shrinking towards " +
      "the top means the signal dies on the way forward (too small init), growing means it explodes.",
  },
  {
    name: "preact_mean",
    title: "pre-activation mean (log10 of |mean|, sign dropped)",
    scale: "logabs",
    about:
      "Average input of the non-linearity. Large values push sigmoid/tanh into their flat tails; " +
      "normalization layers hold it near zero.",
  },
  {
    name: "preact_std",
    title: "pre-activation spread (std)",
    scale: "log",
    about:
      "Spread of the input of the non-linearity. Much above ~2 for tanh or ~5 for sigmoid means most " +
      "units sit in the flat tails, where the derivative is close to zero.",
  },
  {
    name: "saturation",
    title: "saturated fraction (linear 0–1)",
    scale: "linear",
    about:
      "Share of (sample, unit) pairs where the activation's slope is below 5% of its peak. Each " +
      "saturated unit passes almost no gradient back, so a bright band here usually sits below a dark " +
      "band in the gradient heatmaps.",
  },
  {
    name: "dead",
    title: "dead fraction (linear 0–1)",
    scale: "linear",
    about:
      "Share of units that are inactive for every sample in the batch (dead ReLUs). A dead unit gets " +
      "no gradient and may never recover; leaky ReLU, ELU or a smaller learning rate help.",
  },
];

export const METRIC_NAMES = METRICS.map((m) => m.name);
export const metricInfo = (name) => METRICS.find((m) => m.name === name) ?? METRICS[0];

/** Colour value of a raw number: log10 (or log10|x|) or the fraction itself; null stays null. */
export function transformFor(name) {
  const scale = metricInfo(name).scale;
  if (scale === "linear") return (v) => (v === null || v === undefined ? null : v);
  if (scale === "logabs") return (v) => (v ? Math.log10(Math.abs(v)) : null);
  return (v) => (v > 0 ? Math.log10(v) : null); // zero and null have no logarithm: left blank
}

export function colourLabel(name) {
  const scale = metricInfo(name).scale;
  if (scale === "linear") return name;
  return scale === "logabs" ? `log10 |${name}|` : `log10 ${name}`;
}
