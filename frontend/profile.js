/** Depth profile: the chosen metric against layer at one step, several runs overlaid (log axis). */

/* global Plotly */
import { CONFIG, RUN_COLOURS, baseLayout, layerAxis } from "./charts.js";
import { metricInfo } from "./metrics.js";

export class ProfilePanel {
  /** `onStep(step)` is called when the user moves the slider (-1 = follow the latest step). */
  constructor({ div, slider, output, latest }, onStep) {
    this.div = div;
    this.slider = slider;
    this.output = output;
    this.latest = latest;
    this.revision = 0;
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
    runs.forEach((run, i) => {
      const cols = run.metrics[state.metric];
      const at = cols.indexAt(state.step);
      if (at < 0) return;
      steps.push(cols.steps[at]);
      const values = cols.cols[at].map((v) => (v === null ? null : info.scale === "logabs" ? Math.abs(v) : v));
      traces.push({
        // x is the layer index, so runs of different depths line up from the input side.
        type: "scatter", mode: "lines+markers", x: run.layers.map((_, l) => l), y: values, text: run.layers,
        name: `${label(run)} (step ${cols.steps[at]})`,
        line: { color: RUN_COLOURS[i % RUN_COLOURS.length] }, marker: { size: 5 },
        hovertemplate: `%{text}<br>${state.metric} = %{y:.6g}<extra>${label(run)}</extra>`,
      });
    });
    const deepest = runs.reduce((a, r) => (r.layers.length > a.length ? r.layers : a), []);
    const at = steps.length ? `step ${steps[0]}` : "no data yet";
    this.output.value = state.step < 0 ? `latest: ${at}` : at;
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
