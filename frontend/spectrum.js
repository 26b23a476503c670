/** The Jacobian spectrum over training: quantiles of the squared singular values of dh_D/dh_1
 *  at each spectrum step, with the free-probability prediction at step 0. */

/* global Plotly */
import { CONFIG, RUN_COLOURS, baseLayout } from "./charts.js";

export const QUANTILES = [0, 0.1, 0.5, 0.9, 1];
const NAMES = ["min", "10%", "median", "90%", "max"];

/** The q-quantile of sorted values (linear between neighbours). */
export function quantile(sorted, q) {
  if (!sorted.length) return null;
  const at = q * (sorted.length - 1);
  const lo = Math.floor(at);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo);
}

/** Per quantile, one value per step: of the squared singular values, nulls left out. */
export function spectrumQuantiles(singularValues) {
  const rows = singularValues.map((values) =>
    values.filter((v) => v !== null).map((v) => v * v).sort((a, b) => a - b),
  );
  return QUANTILES.map((q) => rows.map((sorted) => quantile(sorted, q)));
}

export class SpectrumPanel {
  constructor({ div, note }, cache) {
    this.div = div;
    this.note = note;
    this.cache = cache;
  }

  render(run, label) {
    const body = run ? this.cache.get("spectrum", run.summary) : null;
    this.div.hidden = !body || body.steps.length === 0;
    if (!body) {
      this.note.textContent = run ? "" : "Shown once a run is ticked in the run list.";
      return;
    }
    const theory = body.theory;
    const said = [];
    if (body.skipped) said.push(`No spectrum for this network: ${body.skipped}.`);
    if (theory?.applicable && theory.mean !== null) {
      const sd = theory.variance !== null ? Math.sqrt(Math.max(theory.variance, 0)) : null;
      said.push(`Theory at step 0: mean ${theory.mean.toPrecision(3)}${sd !== null ? `, standard deviation ${sd.toPrecision(3)}` : ""} over ${theory.layers} layers (1 and 0 is an isometry).`);
    } else if (theory && !theory.applicable) said.push(`No prediction: ${theory.reason}.`);
    this.note.textContent = said.join(" ");
    this.div.dataset.steps = String(body.steps.length);
    if (this.div.hidden) return;
    const series = spectrumQuantiles(body.singular_values);
    const colour = RUN_COLOURS[0];
    const traces = series.map((y, i) => ({
      type: "scatter", mode: "lines+markers", x: body.steps, y, name: NAMES[i],
      line: { color: colour, width: i === 2 ? 2.5 : 1, dash: i === 0 || i === 4 ? "dot" : "solid" },
      marker: { size: 4 },
      hovertemplate: `step %{x}<br>${NAMES[i]} σ² %{y:.3g}<extra>${label(run)}</extra>`,
    }));
    if (theory?.applicable && theory.mean > 0) {
      const sd = Math.sqrt(Math.max(theory.variance ?? 0, 0));
      traces.push({
        type: "scatter", mode: "markers", x: [0], y: [theory.mean], name: "theory mean ± sd (step 0)",
        marker: { symbol: "diamond", size: 11, color: "#333" },
        error_y: { type: "data", array: [sd], arrayminus: [Math.min(sd, theory.mean * 0.999)], visible: true },
        hovertemplate: `theory: mean %{y:.3g}, sd ${sd.toPrecision(3)}<extra></extra>`,
      });
    }
    Plotly.react(this.div, traces, baseLayout({
      height: 320,
      plot_bgcolor: "#ffffff",
      xaxis: { title: { text: "step" }, gridcolor: "#eee" },
      yaxis: { title: { text: "squared singular value of dh_D/dh_1" }, type: "log", exponentformat: "power", gridcolor: "#eee" },
      legend: { orientation: "h", y: -0.25, font: { size: 11 } },
    }), CONFIG);
  }
}
