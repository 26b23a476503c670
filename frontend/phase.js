/** The order-to-chaos phase diagram: POST /api/scans/init over a grid of (sigma_w, sigma_b),
 *  the measured log gradient ratio per cell, the critical line on top; a click starts a run
 *  with that init (scaled_normal, init_gain = sigma_w, bias_std = sigma_b). */

/* global Plotly */
import { describeError } from "./api.js";
import { CONFIG, DIVERGING, baseLayout } from "./charts.js";

const FIELDS = [
  // [name, label, default, min, max, step]
  ["depth", "depth", 30, 1, 200, 1],
  ["width", "width", 256, 2, 1024, 1],
  ["sw_min", "σ_w from", 0.5, 0.05, 10, 0.05],
  ["sw_max", "σ_w to", 4, 0.05, 10, 0.05],
  ["sw_num", "σ_w steps", 16, 1, 64, 1],
  ["sb_min", "σ_b from", 0, 0, 10, 0.05],
  ["sb_max", "σ_b to", 0.5, 0, 10, 0.05],
  ["sb_num", "σ_b steps", 11, 1, 64, 1],
];

/** The request body the form describes. */
export function scanRequest(values) {
  return {
    activation: values.activation,
    depth: values.depth,
    width: values.width,
    sigma_w: { min: values.sw_min, max: values.sw_max, num: values.sw_num },
    sigma_b: { min: values.sb_min, max: values.sb_max, num: values.sb_num },
  };
}

/** The run a clicked cell stands for: the base config with the scan's network and init. */
export function cellConfig(base, scan, sigmaW, sigmaB) {
  const model = { ...(base?.model ?? {}), activation: scan.activation, depth: scan.depth, width: scan.width };
  Object.assign(model, { init: "scaled_normal", init_gain: Number(sigmaW.toFixed(4)), bias_std: Number(sigmaB.toFixed(4)), norm: "none", residual_every: 0 });
  return { ...(base ?? {}), model };
}

export function phaseTraces(scan) {
  const span = Math.max(1, ...scan.log_grad_ratio.flat().filter((v) => v !== null).map(Math.abs));
  const text = scan.log_grad_ratio.map((row, i) =>
    row.map((v, j) => {
      const chi = scan.chi1[i][j];
      const predicted = scan.predicted_log_grad_ratio[i][j];
      const std = scan.last_act_std[i][j];
      const f = (x, d = 3) => (x === null ? "null" : x.toPrecision(d));
      return `ln ratio measured ${f(v)}, theory ${f(predicted)}<br>chi_1 ${f(chi)}, last act_std ${f(std)}`;
    }),
  );
  return [
    {
      type: "heatmap", x: scan.sigma_w, y: scan.sigma_b, z: scan.log_grad_ratio, text,
      zmin: -span, zmax: span, colorscale: DIVERGING, hoverongaps: false,
      colorbar: { title: { text: "ln ‖dL/dh₁‖/‖dL/dh_D‖" } },
      hovertemplate: "σ_w %{x:.3f}, σ_b %{y:.3f}<br>%{text}<br>click: start this run<extra></extra>",
    },
    {
      type: "scatter", mode: "lines", x: scan.critical_sigma_w, y: scan.critical_sigma_b,
      name: "critical line (χ₁ = 1)", line: { color: "#111", width: 3 }, hoverinfo: "skip",
    },
  ];
}

export class PhasePanel {
  /** `activations`: the registry's names; `start(config)` starts a run; `base()` the form's config. */
  constructor({ form, div, note }, { scan, start, base, activations }) {
    Object.assign(this, { form, div, note, scan, start, base });
    this.result = null;
    const select = Object.assign(document.createElement("select"), { id: "scan-activation" });
    select.replaceChildren(...activations.map((a) => new Option(a, a, a === "tanh", a === "tanh")));
    const label = Object.assign(document.createElement("label"), { htmlFor: select.id, textContent: "activation" });
    const parts = [label, select];
    for (const [name, text, value, min, max, step] of FIELDS) {
      const input = Object.assign(document.createElement("input"), { type: "number", id: `scan-${name}`, value, min, max, step });
      parts.push(Object.assign(document.createElement("label"), { htmlFor: input.id, textContent: text }), input);
    }
    this.button = Object.assign(document.createElement("button"), { type: "submit", textContent: "Scan", className: "primary" });
    form.replaceChildren(...parts, this.button);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.run();
    });
  }

  values() {
    const out = { activation: this.form.querySelector("#scan-activation").value };
    for (const [name] of FIELDS) out[name] = Number(this.form.querySelector(`#scan-${name}`).value);
    return out;
  }

  async run() {
    this.button.disabled = true;
    this.note.textContent = "Scanning: one forward and backward pass per cell…";
    try {
      const r = await this.scan(scanRequest(this.values()));
      if (!r.ok) {
        this.note.textContent = `The scan was refused (${r.status}): ${describeError(r.data)}`;
        return;
      }
      this.draw(r.data);
    } finally {
      this.button.disabled = false;
    }
  }

  draw(scan) {
    this.result = scan;
    this.div.hidden = false;
    this.div.dataset.cells = String(scan.sigma_w.length * scan.sigma_b.length);
    this.note.textContent = `${scan.activation}, depth ${scan.depth}, width ${scan.width}: measured in ${scan.seconds.toFixed(1)} s. Blue: the gradient fades towards the input (ordered); orange: it grows (chaotic); the line is where the mean-field χ₁ = 1. Click a cell to train that network.`;
    Plotly.react(this.div, phaseTraces(scan), baseLayout({
      height: 420,
      xaxis: { title: { text: "σ_w (init_gain)" }, range: [Math.min(...scan.sigma_w), Math.max(...scan.sigma_w)] },
      yaxis: { title: { text: "σ_b (bias_std)" } },
      legend: { orientation: "h", y: -0.2 },
    }), CONFIG).then(() => {
      if (this.div.dataset.bound) return;
      this.div.dataset.bound = "true";
      this.div.on("plotly_click", (event) => {
        const point = event.points.find((p) => p.data.type === "heatmap");
        if (point) this.pick(point.x, point.y);
      });
    });
  }

  /** Start the run a cell stands for. */
  pick(sigmaW, sigmaB) {
    if (!this.result) return;
    this.start(cellConfig(this.base(), this.result, sigmaW, sigmaB));
  }
}
