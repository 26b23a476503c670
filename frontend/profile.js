/** Depth profile: the chosen metric against layer at one step, several runs overlaid (log axis). */

/* global Plotly */
import { CONFIG, RUN_COLOURS, baseLayout, layerAxis } from "./charts.js";
import { metricInfo } from "./metrics.js";

/** Layers by index, named briefly: runs of neighbours as ranges ("block2–block9"), and past
 *  four ranges, how many layers are left. */
function nameLayers(layers, indices) {
  const ranges = [];
  for (const l of indices) {
    const last = ranges[ranges.length - 1];
    if (last && last[1] === l - 1) last[1] = l;
    else ranges.push([l, l]);
  }
  const kept = ranges.slice(0, 4);
  const named = kept.map(([a, b]) => (a === b ? layers[a] : `${layers[a]}–${layers[b]}`));
  const shown = kept.reduce((n, [a, b]) => n + b - a + 1, 0);
  if (shown < indices.length) named.push(`${indices.length - shown} more`);
  return named.join(", ");
}

/**
 * What one run's profile line leaves out, as short phrases (none when it draws every layer):
 * layers whose value is non-finite (null in the record; magenta on the heatmap), and on a log
 * axis layers whose value is 0 or below. `values` are as plotted, null kept.
 */
export function undrawn(layers, values, logAxis) {
  const phrases = [];
  const all = layers.map((_, l) => l);
  const missing = all.filter((l) => values[l] === null);
  if (missing.length) phrases.push(`${nameLayers(layers, missing)} non-finite`);
  const nonPositive = logAxis ? all.filter((l) => values[l] !== null && values[l] <= 0) : [];
  if (nonPositive.length) phrases.push(`${nameLayers(layers, nonPositive)} ≤ 0, off the log axis`);
  return phrases;
}

export class ProfilePanel {
  /** `onStep(step)` is called when the user moves the slider (-1 = follow the latest step);
   *  `note` says which layers the lines leave out, and why. */
  constructor({ div, slider, output, latest, note }, onStep) {
    this.div = div;
    this.note = note;
    this.slider = slider;
    this.output = output;
    this.latest = latest;
    this.revision = 0;
    this.overlay = null; // (runs, state) -> extra traces (analysis.js: the theory at step 0)
    slider.addEventListener("input", () => onStep(Number(slider.value)));
    latest.addEventListener("click", () => onStep(-1));
  }

  render(runs, state, label) {
    const info = metricInfo(state.metric);
    const last = Math.max(0, ...runs.map((r) => r.metrics[state.metric].lastStep).filter(Number.isFinite));
    this.slider.max = String(last);
    this.slider.value = String(state.step < 0 ? last : Math.min(state.step, last));
    this.slider.setAttribute("aria-valuetext", state.step < 0 ? `latest (step ${last})` : `step ${state.step}`);
    this.latest.setAttribute("aria-pressed", String(state.step < 0));
    const traces = [];
    const steps = [];
    const left = [];
    const logAxis = info.scale !== "linear";
    runs.forEach((run, i) => {
      const cols = run.metrics[state.metric];
      const at = cols.indexAt(state.step);
      if (at < 0) return;
      steps.push(cols.steps[at]);
      const values = cols.cols[at].map((v) => (v === null ? null : info.scale === "logabs" ? Math.abs(v) : v));
      const phrases = undrawn(run.layers, values, logAxis);
      if (phrases.length) left.push(`${label(run)}: ${phrases.join("; ")}`);
      traces.push({
        // x is the layer index, so runs of different depths line up from the input side.
        type: "scatter", mode: "lines+markers", x: run.layers.map((_, l) => l), y: values, text: run.layers,
        name: `${label(run)} (step ${cols.steps[at]})`,
        line: { color: RUN_COLOURS[i % RUN_COLOURS.length] }, marker: { size: 5 },
        hovertemplate: `%{text}<br>${state.metric} = %{y:.6g}<extra>${label(run)}</extra>`,
      });
    });
    if (this.overlay) traces.push(...this.overlay(runs, state));
    const deepest = runs.reduce((a, r) => (r.layers.length > a.length ? r.layers : a), []);
    const at = steps.length ? `step ${steps[0]}` : "no data yet";
    this.output.value = state.step < 0 ? `latest: ${at}` : at;
    this.note.textContent = left.length ? `Not drawn: ${left.join(" · ")}.` : "";
    this.note.hidden = left.length === 0;
    this.revision++;
    const yTitle = info.scale === "logabs" ? `|${state.metric}| (log axis)` : info.scale === "linear" ? state.metric : `${state.metric} (log axis)`;
    Plotly.react(this.div, traces, baseLayout({
      height: 340,
      plot_bgcolor: "#ffffff",
      margin: { l: 70, r: 10, t: 10, b: 60 },
      xaxis: { ...layerAxis(deepest, "layer (input → readout)"), gridcolor: "#eee", automargin: true },
      yaxis: { title: { text: yTitle }, type: info.scale === "linear" ? "linear" : "log", exponentformat: "power", gridcolor: "#eee" },
      legend: { orientation: "h", y: -0.3, font: { size: 11 } },
      showlegend: true,
      datarevision: this.revision,
    }), CONFIG);
  }
}
