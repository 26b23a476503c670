/** Loss and accuracy curves (train and held-out) for every selected run, stacked on one step axis. */

/* global Plotly */
import { CONFIG, RUN_COLOURS, baseLayout } from "./charts.js";
import { formatNumber } from "./format.js";

// Below this many points a line also gets markers: a run that diverged after one or two steps
// still shows them (a single point drawn as a line is invisible).
const MARKERS_BELOW = 60;

function column(cols, k) {
  return cols.cols.map((c) => c[k]);
}

export class CurvesPanel {
  constructor(div) {
    this.div = div;
    this.revision = 0;
  }

  render(runs, label) {
    const traces = [];
    runs.forEach((run, i) => {
      const colour = RUN_COLOURS[i % RUN_COLOURS.length];
      const name = label(run);
      const s = run.scalars;
      const group = run.id;
      const line = (y, yaxis, dash, what, x = s.steps) => ({
        type: "scatter", mode: y.length < MARKERS_BELOW ? "lines+markers" : "lines", x, y, yaxis, legendgroup: group,
        name: `${name} · ${what}`, line: { color: colour, dash, width: 1.6 }, marker: { size: 5 },
        customdata: y.map(formatNumber),
        hovertemplate: `${what} %{customdata}<br>step %{x}<extra>${name}</extra>`,
      });
      traces.push(line(column(s, 0), "y", "solid", "train loss"));
      traces.push({ ...line(run.val.loss, "y", "dot", "held-out loss", run.val.steps), mode: "lines+markers" });
      if (s.cols.some((c) => c[1] !== null)) {
        traces.push({ ...line(column(s, 1), "y2", "solid", "train accuracy"), showlegend: false });
        traces.push({ ...line(run.val.accuracy, "y2", "dot", "held-out accuracy", run.val.steps), mode: "lines+markers", showlegend: false });
      }
    });
    this.revision++;
    const layout = baseLayout({
      height: 400,
      plot_bgcolor: "#ffffff",
      margin: { l: 60, r: 10, t: 10, b: 40 },
      xaxis: { title: { text: "step" }, anchor: "y2" },
      yaxis: { title: { text: "loss (log)" }, type: "log", domain: [0.5, 1], gridcolor: "#eee", exponentformat: "power" },
      yaxis2: { title: { text: "accuracy" }, domain: [0, 0.42], range: [0, 1.02], gridcolor: "#eee" },
      legend: { orientation: "h", yanchor: "top", y: -0.2, font: { size: 11 } },
      showlegend: runs.length > 0,
      datarevision: this.revision,
    });
    Plotly.react(this.div, traces, layout, CONFIG);
  }
}
