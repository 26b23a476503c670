/** Heatmaps of one metric over layer × step: a single run, runs side by side on one scale, or log B − log A. */

/* global Plotly */
import { CONFIG, DIVERGING, NON_FINITE, SEQUENTIAL, baseLayout } from "./charts.js";
import { colourLabel, metricInfo, transformFor } from "./metrics.js";

/**
 * One plot's rows, grown in place. z holds colour values, raw the exact numbers for hover,
 * mask a 1 where a cell went non-finite (null after the layer held a number).
 */
class Grid {
  constructor(run, metric) {
    this.run = run;
    this.cols = run.metrics[metric];
    this.version = this.cols.version;
    this.tf = transformFor(metric);
    const n = run.layers.length;
    this.x = [];
    this.z = Array.from({ length: n }, () => []);
    this.raw = Array.from({ length: n }, () => []);
    this.mask = Array.from({ length: n }, () => []);
    this.seen = new Uint8Array(n);
    this.lo = Infinity;
    this.hi = -Infinity;
    this.append();
  }

  get stale() {
    return this.cols.version !== this.version;
  }

  /** Copy columns not drawn yet (and a provisional last column that moved on). */
  append() {
    const { steps, cols } = this.cols;
    if (this.x.length && steps[this.x.length - 1] !== this.x.at(-1)) {
      this.x.pop();
      for (const rows of [this.z, this.raw, this.mask]) for (const row of rows) row.pop();
    }
    const start = this.x.length;
    for (let i = start; i < steps.length; i++) {
      this.x.push(steps[i]);
      const col = cols[i];
      for (let l = 0; l < this.z.length; l++) {
        const v = col[l] ?? null;
        const t = this.tf(v);
        this.z[l].push(t);
        this.raw[l].push(v);
        if (v !== null) this.seen[l] = 1;
        this.mask[l].push(v === null && this.seen[l] ? 1 : null);
        if (t !== null) {
          if (t < this.lo) this.lo = t;
          if (t > this.hi) this.hi = t;
        }
      }
    }
    return steps.length - start;
  }
}

function heatTrace(grid, metric, range) {
  return {
    type: "heatmap",
    x: grid.x,
    y: grid.run.layers,
    z: grid.z,
    customdata: grid.raw,
    colorscale: SEQUENTIAL,
    ...range,
    colorbar: { title: { text: colourLabel(metric), side: "right" }, thickness: 14 },
    hovertemplate: `layer %{y}<br>step %{x}<br>${metric} = %{customdata:.6g}<br>${colourLabel(metric)} = %{z:.3f}<extra></extra>`,
    hoverongaps: false,
  };
}

function maskTrace(grid) {
  return {
    type: "heatmap",
    x: grid.x,
    y: grid.run.layers,
    z: grid.mask,
    colorscale: [[0, NON_FINITE], [1, NON_FINITE]],
    showscale: false,
    zmin: 0,
    zmax: 1,
    hovertemplate: "layer %{y}<br>step %{x}<br>non-finite (NaN or ∞)<extra></extra>",
    hoverongaps: false,
    name: "non-finite",
  };
}

function heightFor(layers) {
  return Math.max(300, Math.min(640, 160 + layers * 4));
}

function layoutFor(grid, title, revision) {
  const bad = grid.run.firstNonFinite();
  const annotations = bad
    ? [{
        x: bad.step, y: bad.layer, text: `first non-finite: ${bad.layer}, step ${bad.step}`,
        showarrow: true, arrowcolor: "#1b1f24", arrowwidth: 1.5, ax: -70, ay: -35,
        bgcolor: "#ffffff", bordercolor: NON_FINITE, borderwidth: 2, font: { color: "#1b1f24" },
      }]
    : [];
  return baseLayout({
    title: { text: title, font: { size: 13 }, x: 0.01 },
    height: heightFor(grid.run.layers.length),
    xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "layer (input at bottom)" }, type: "category" },
    datarevision: revision,
    annotations,
  });
}

export class HeatmapPanel {
  constructor(container) {
    this.el = container;
    this.key = null;
    this.plots = []; // [{div, grid}]
    this.revision = 0;
  }

  /** Draw `runs` for the state's metric and view; incremental when only new columns arrived. */
  render(runs, state, label) {
    const view = state.view === "ratio" && runs.length >= 2 ? "ratio" : state.view;
    const shown = view === "single" ? runs.slice(0, 1) : runs;
    const key = [view, state.metric, ...shown.map((r) => r.id)].join("|");
    if (!shown.length) return this.message("Run a preset or pick a run from the list to see its heatmap.");
    if (view === "ratio") return this.renderRatio(shown[0], shown[1], state.metric, label, key);
    if (state.view === "ratio") this.note = "The ratio view needs two runs: tick a second run in the list.";
    else this.note = "";
    const rebuild = key !== this.key || this.plots.some((p) => p.grid.stale);
    if (rebuild) this.build(shown, state.metric, key);
    else for (const p of this.plots) p.grid.append();
    this.draw(view, state.metric, label);
  }

  message(text) {
    this.key = null;
    this.plots = [];
    this.el.replaceChildren(Object.assign(document.createElement("p"), { className: "empty", textContent: text }));
  }

  build(runs, metric, key) {
    for (const p of this.plots) Plotly.purge(p.div);
    this.key = key;
    this.el.replaceChildren();
    this.el.classList.toggle("grid2", runs.length > 1);
    if (this.note) this.el.append(Object.assign(document.createElement("p"), { className: "note", textContent: this.note }));
    this.plots = runs.map((run) => {
      const div = document.createElement("div");
      div.className = "plot heatmap";
      div.dataset.run = run.id;
      this.el.append(div);
      return { div, grid: new Grid(run, metric) };
    });
  }

  draw(view, metric, label) {
    this.revision++;
    const info = metricInfo(metric);
    let range = {};
    if (info.scale === "linear") range = { zmin: 0, zmax: 1, zauto: false };
    else if (view === "compare") {
      // One colour scale for every run, so equal colours mean equal values across plots.
      const lo = Math.min(...this.plots.map((p) => p.grid.lo));
      const hi = Math.max(...this.plots.map((p) => p.grid.hi));
      if (Number.isFinite(lo) && Number.isFinite(hi)) range = { zmin: lo, zmax: Math.max(hi, lo + 1e-6), zauto: false };
    }
    for (const { div, grid } of this.plots) {
      const title = `${label(grid.run)} · ${info.name}`;
      const traces = [heatTrace(grid, metric, range), maskTrace(grid)];
      Plotly.react(div, traces, layoutFor(grid, title, this.revision), CONFIG);
      div.dataset.columns = String(grid.x.length);
    }
  }

  renderRatio(a, b, metric, label, key) {
    if (key !== this.key) {
      this.build([a], metric, key);
      this.plots[0].div.classList.add("ratio");
    }
    const tf = transformFor(metric);
    const ca = a.metrics[metric];
    const cb = b.metrics[metric];
    const n = Math.min(a.layers.length, b.layers.length);
    const x = [];
    const z = Array.from({ length: n }, () => []);
    let i = 0;
    let j = 0;
    let top = 0;
    // Walk both step lists once; only steps both runs recorded get a column.
    while (i < ca.length && j < cb.length) {
      const sa = ca.steps[i];
      const sb = cb.steps[j];
      if (sa < sb) i++;
      else if (sb < sa) j++;
      else {
        x.push(sa);
        for (let l = 0; l < n; l++) {
          const va = tf(ca.cols[i][l] ?? null);
          const vb = tf(cb.cols[j][l] ?? null);
          const d = va === null || vb === null ? null : vb - va;
          if (d !== null && Math.abs(d) > top) top = Math.abs(d);
          z[l].push(d);
        }
        i++;
        j++;
      }
    }
    const names = a.layers.slice(0, n);
    const what = metricInfo(metric).scale === "linear" ? `${metric} B − A` : `log10 B − log10 A`;
    const trace = {
      type: "heatmap", x, y: names, z, colorscale: DIVERGING, zmid: 0,
      zmin: -(top || 1), zmax: top || 1, zauto: false,
      colorbar: { title: { text: what, side: "right" }, thickness: 14 },
      hovertemplate: `layer %{y}<br>step %{x}<br>${what} = %{z:.3f}<extra></extra>`,
      hoverongaps: false,
    };
    this.revision++;
    const title = `B / A for ${metric}: B = ${label(b)}, A = ${label(a)} (orange: B larger, blue: A larger)`;
    const layout = baseLayout({
      title: { text: title, font: { size: 13 }, x: 0.01 },
      height: heightFor(n),
      xaxis: { title: { text: "step" } },
      yaxis: { title: { text: "layer (input at bottom)" }, type: "category" },
      datarevision: this.revision,
    });
    const div = this.plots[0].div;
    Plotly.react(div, [trace], layout, CONFIG);
    div.dataset.columns = String(x.length);
  }
}
