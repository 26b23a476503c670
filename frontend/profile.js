/** Depth profile: the chosen metric against layer at one step, several runs overlaid (log axis). */

/* global Plotly */
import { CONFIG, RUN_COLOURS, baseLayout, layerAxis } from "./charts.js";
import { formatNumber, nameLayers } from "./format.js";
import { metricInfo } from "./metrics.js";

/**
 * The column the profile shows: the one at `step`, or when following the latest step, the latest
 * column holding any number (a diverged run's last step may hold none). `fellBack` is set when
 * that is not the latest column.
 */
export function profileColumn(cols, step) {
  const at = cols.indexAt(step);
  if (step >= 0 || at < 0) return { at, fellBack: false };
  let i = at;
  while (i > 0 && cols.cols[i].every((v) => v === null || v === undefined)) i--;
  return { at: i, fellBack: i !== at };
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
    const fallbacks = [];
    runs.forEach((run, i) => {
      const cols = run.metrics[state.metric];
      const { at, fellBack } = profileColumn(cols, state.step);
      if (at < 0) return;
      if (fellBack) fallbacks.push(`${label(run)}: its latest step (${cols.steps.at(-1)}) has no finite ${state.metric} value; showing step ${cols.steps[at]}, the last that has.`);
      steps.push(cols.steps[at]);
      const values = cols.cols[at].map((v) => (v === null ? null : info.scale === "logabs" ? Math.abs(v) : v));
      const phrases = undrawn(run.layers, values, logAxis);
      if (phrases.length) left.push(`${label(run)} at step ${cols.steps[at]}: ${phrases.join("; ")}`);
      traces.push({
        // x is the layer index, so runs of different depths line up from the input side.
        type: "scatter", mode: "lines+markers", x: run.layers.map((_, l) => l), y: values, text: run.layers,
        name: `${label(run)} (step ${cols.steps[at]})`,
        line: { color: RUN_COLOURS[i % RUN_COLOURS.length] }, marker: { size: 6 },
        customdata: values.map(formatNumber),
        hovertemplate: `%{text}<br>${state.metric} = %{customdata}<extra>${label(run)}</extra>`,
      });
    });
    if (this.overlay) traces.push(...this.overlay(runs, state));
    const deepest = runs.reduce((a, r) => (r.layers.length > a.length ? r.layers : a), []);
    const at = steps.length ? `step ${steps[0]}` : "no data yet";
    this.output.value = state.step < 0 ? `latest: ${at}` : at;
    const notes = [...fallbacks, ...(left.length ? [`Not drawn: ${left.join(" · ")}.`] : [])];
    this.note.textContent = notes.join(" ");
    this.note.hidden = notes.length === 0;
    this.revision++;
    const yTitle = info.scale === "logabs" ? `|${state.metric}| (log axis)` : info.scale === "linear" ? `${state.metric} (fraction)` : `${state.metric} (log axis)`;
    const yaxis = info.scale === "linear"
      ? { range: [-0.03, 1.03], tickvals: [0, 0.25, 0.5, 0.75, 1] } // a fraction: always 0..1
      : { type: "log", exponentformat: "power" };
    // Ticks stay horizontal under their points, thinned by layerAxis, with room for the readout's.
    const fit = Math.floor((this.div.clientWidth - 110) / (8 * Math.max(...deepest.map((n) => n.length), 4)));
    const xaxis = { ...layerAxis(deepest, "layer (input → readout)", fit), range: [-0.5, deepest.length - 0.5], tickangle: 0, gridcolor: "#eee", automargin: true };
    Plotly.react(this.div, traces, baseLayout({
      height: 340,
      plot_bgcolor: "#ffffff",
      margin: { l: 70, r: 30, t: 10, b: 60 },
      xaxis,
      yaxis: { title: { text: yTitle }, gridcolor: "#eee", ...yaxis },
      legend: { orientation: "h", y: -0.3, font: { size: 11 } },
      showlegend: true,
      datarevision: this.revision,
    }), CONFIG);
  }
}
