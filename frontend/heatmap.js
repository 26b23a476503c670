/** Heatmaps of one metric over layer × step: a single run, runs side by side on one scale, or log B − log A. */

/* global Plotly */
import { BLANK, CONFIG, DIVERGING, NON_FINITE, SEQUENTIAL, baseLayout, layerAxis } from "./charts.js";
import { colourLabel, metricInfo, transformFor } from "./metrics.js";
import { Painter, colourTable } from "./painter.js";
import { logRatio } from "./rundata.js";

// Plotly redraws a whole heatmap trace on any change (~100 ms for 100 × 1000 cells), so the cells
// are painted into an image here, one pixel per cell, and only new columns are painted per
// update; Plotly draws that image under its axes, colour bar and annotations.
const SEQUENTIAL_TABLE = colourTable(SEQUENTIAL);
const DIVERGING_TABLE = colourTable(DIVERGING);

/** One run's rows, grown in place: z colour values, raw exact numbers, mask 1 = non-finite. */
class Grid {
  constructor(run, metric) {
    this.run = run;
    this.layers = run.layers;
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
    this.dirty = 0; // first column not painted yet
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
    this.dirty = Math.min(this.dirty, this.x.length);
    for (let i = this.x.length; i < steps.length; i++) {
      this.x.push(steps[i]);
      const col = cols[i];
      for (let l = 0; l < this.z.length; l++) {
        const v = col[l] ?? null;
        const t = this.tf(v);
        this.z[l].push(t);
        this.raw[l].push(v);
        if (v !== null) this.seen[l] = 1;
        this.mask[l].push(v === null && this.seen[l] ? 1 : 0);
        if (t !== null) {
          if (t < this.lo) this.lo = t;
          if (t > this.hi) this.hi = t;
        }
      }
    }
  }

  hover(l, i, metric) {
    const v = this.raw[l][i];
    if (this.mask[l][i]) return "non-finite (NaN or ∞)";
    if (v === null) return `${metric}: undefined`;
    return `${metric} = ${v.toPrecision(6)}\n${colourLabel(metric)} = ${this.z[l][i]?.toFixed(3) ?? "—"}`;
  }
}

/** Outward to a quarter decade, so a slowly drifting range does not repaint every frame. */
function roundRange(lo, hi) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  const a = Math.floor(lo * 4) / 4;
  const b = Math.ceil(hi * 4) / 4;
  return b > a ? [a, b] : [a, a + 0.25];
}

const lost = (err) => console.warn("heatmap update dropped", err);

function heightFor(layers) {
  return Math.max(300, Math.min(640, 160 + layers * 4));
}

/** An image spanning the steps, plus two invisible traces: the data extent and the colour bar. */
function figure({ x, layers, source, range, colourscale, barTitle, title, annotations }) {
  const n = x.length;
  const d = n > 1 ? (x[n - 1] - x[0]) / (n - 1) : 1;
  const left = (x[0] ?? 0) - d / 2;
  const span = n * d;
  // One empty cell covering the image: heatmaps autorange without padding, so the axes fit
  // the image exactly, and a user's zoom survives updates (uirevision).
  const extent = {
    type: "heatmap", z: [[0]], opacity: 0, x0: left + span / 2, dx: span, y0: (layers.length - 1) / 2,
    dy: layers.length, showscale: false, hoverinfo: "skip",
  };
  const bar = {
    // In the middle of the extent, so its markers' autorange padding stays inside it.
    type: "scatter", mode: "markers", x: [left + span / 2, left + span / 2],
    y: [(layers.length - 1) / 2, (layers.length - 1) / 2], hoverinfo: "skip", showlegend: false,
    marker: {
      size: 1, opacity: 0, color: range, cmin: range[0], cmax: range[1], colorscale: colourscale,
      showscale: true, colorbar: { title: { text: barTitle, side: "right" }, thickness: 14 },
    },
  };
  const layout = baseLayout({
    title: { text: title, font: { size: 13 }, x: 0.01 },
    height: heightFor(layers.length),
    hovermode: false,
    xaxis: { title: { text: "step" }, showgrid: false, zeroline: false },
    yaxis: { ...layerAxis(layers), showgrid: false },
    images: [{
      source, xref: "x", yref: "y", x: left, y: layers.length - 0.5, sizex: span, sizey: layers.length,
      xanchor: "left", yanchor: "top", sizing: "stretch", layer: "below",
    }],
    annotations,
  });
  return { traces: [extent, bar], layout, left, d, span };
}

export class HeatmapPanel {
  constructor(container) {
    this.el = container;
    this.key = null;
    this.plots = []; // [{div, grid, painter, range, geometry}]
    this.tip = Object.assign(document.createElement("div"), { className: "hm-tip", hidden: true });
    this.tip.setAttribute("role", "status");
  }

  /** Draw `runs` for the state's metric and view; only new columns are painted. */
  render(runs, state, label) {
    const view = state.view === "ratio" && runs.length >= 2 ? "ratio" : state.view;
    const shown = view === "single" ? runs.slice(0, 1) : runs;
    if (!shown.length) return this.message("Run a preset or pick a run from the list to see its heatmap.");
    const key = [view, state.metric, ...shown.map((r) => r.id)].join("|");
    this.note = state.view === "ratio" && view !== "ratio" ? "The ratio view needs two runs: tick a second run in the list." : "";
    if (view === "ratio") return this.renderRatio(shown[0], shown[1], state.metric, label, key);
    if (key !== this.key || this.plots.some((p) => p.grid.stale)) {
      this.build(shown.length, key);
      this.plots.forEach((p, i) => (p.grid = new Grid(shown[i], state.metric)));
    } else for (const p of this.plots) p.grid.append();
    this.drawRuns(view, state.metric, label);
  }

  message(text) {
    for (const p of this.plots) Plotly.purge(p.div);
    this.key = null;
    this.plots = [];
    this.el.replaceChildren(Object.assign(document.createElement("p"), { className: "empty", textContent: text }));
  }

  build(count, key) {
    for (const p of this.plots) Plotly.purge(p.div);
    this.key = key;
    this.el.replaceChildren();
    this.el.classList.toggle("grid2", count > 1);
    if (this.note) this.el.append(Object.assign(document.createElement("p"), { className: "note", textContent: this.note }));
    this.plots = Array.from({ length: count }, () => {
      const div = Object.assign(document.createElement("div"), { className: "plot heatmap" });
      this.el.append(div);
      const plot = { div, grid: null, painter: null, range: null, geometry: null };
      div.addEventListener("mousemove", (e) => this.hover((this.pointer = { e, plot }).e, plot));
      div.addEventListener("mouseleave", () => {
        this.pointer = null;
        this.tip.hidden = true;
      });
      // Keyboard: focus the plot, then arrows walk the cells (Shift: 10 at a time).
      div.tabIndex = 0;
      div.setAttribute("aria-label", "heatmap: arrow keys read the cells, Home and End jump to the first and last step");
      div.addEventListener("keydown", (e) => this.keyboard(e, plot));
      div.addEventListener("blur", () => (this.tip.hidden = true));
      return plot;
    });
    this.el.append(this.tip);
  }

  drawRuns(view, metric, label) {
    const info = metricInfo(metric);
    let shared = null;
    if (info.scale === "linear") shared = [0, 1];
    else if (view === "compare") {
      // One colour scale for every run, so equal colours mean equal values across plots.
      shared = roundRange(Math.min(...this.plots.map((p) => p.grid.lo)), Math.max(...this.plots.map((p) => p.grid.hi)));
    }
    for (const plot of this.plots) {
      const { grid } = plot;
      const range = shared ?? roundRange(grid.lo, grid.hi);
      if (!plot.painter || plot.range?.[0] !== range[0] || plot.range?.[1] !== range[1]) {
        plot.painter ??= new Painter(grid.layers.length, { table: SEQUENTIAL_TABLE, blank: BLANK, bad: NON_FINITE });
        plot.range = range;
        grid.dirty = 0; // a new colour range repaints every column
      }
      for (let i = grid.dirty; i < grid.x.length; i++) {
        plot.painter.paint(i, grid.z.map((row) => row[i]), grid.mask.map((row) => row[i]), range[0], range[1]);
      }
      grid.dirty = grid.x.length;
      const bad = grid.run.firstNonFinite();
      const badIndex = bad ? grid.layers.indexOf(bad.layer) : -1;
      const annotations = badIndex >= 0 ? [{
        x: bad.step, y: badIndex, text: `first non-finite: ${bad.layer}, step ${bad.step}`,
        showarrow: true, arrowcolor: "#1b1f24", arrowwidth: 1.5, ax: -70, ay: -35,
        bgcolor: "#ffffff", bordercolor: NON_FINITE, borderwidth: 2, font: { color: "#1b1f24" },
      }] : [];
      const fig = figure({
        x: grid.x, layers: grid.layers, source: plot.painter.url(grid.x.length), range,
        colourscale: SEQUENTIAL, barTitle: colourLabel(metric),
        title: `${label(grid.run)} · ${metric}`, annotations,
      });
      this.show(plot, fig, { metric, text: (l, i) => grid.hover(l, i, metric) }, grid.x, grid.layers, range);
      plot.div.dataset.run = grid.run.id;
    }
  }

  show(plot, fig, hover, x, layers, range) {
    this.apply(plot, fig, layers.length);
    plot.geometry = { left: fig.left, d: fig.d, x, layers, hover };
    plot.div.dataset.columns = String(x.length);
    // A tooltip under a still cursor follows the data as it streams in.
    if (this.pointer?.plot === plot) this.hover(this.pointer.e, plot);
    plot.div.heat = { layers, columns: x.length, lastStep: x.at(-1), zmin: range[0], zmax: range[1], colourbar: fig.traces[1].marker.colorbar.title.text };
  }

  /**
   * A full Plotly.react costs ~100 ms here whatever changed, so a live update that only adds
   * columns swaps the image and the step range in one relayout (~5 ms). A zoom the user made is
   * kept: the step range then stays where they put it.
   */
  apply(plot, fig, rows) {
    const { layout, traces } = fig;
    const xRange = [fig.left, fig.left + fig.span];
    const image = layout.images[0];
    const signature = JSON.stringify([layout.title.text, layout.annotations, traces[1].marker, rows]);
    if (plot.signature === signature && plot.div._fullLayout) {
      const update = { "images[0].source": image.source, "images[0].x": image.x, "images[0].sizex": image.sizex };
      if (!plot.zoom) update["xaxis.range"] = xRange;
      plot.self = true;
      Plotly.relayout(plot.div, update).catch(lost); // the plot may be rebuilt meanwhile
      plot.self = false;
      return;
    }
    layout.xaxis.range = plot.zoom?.x ?? xRange;
    layout.yaxis.range = plot.zoom?.y ?? [-0.5, rows - 0.5];
    delete layout.uirevision;
    plot.self = true;
    Plotly.react(plot.div, traces, layout, CONFIG).catch(lost);
    plot.self = false;
    plot.signature = signature;
    if (!plot.listening) {
      plot.listening = true;
      plot.div.on("plotly_relayout", (e) => {
        // Our own updates may report after they return (the image loads asynchronously);
        // they are the ones that carry the image source.
        if (plot.self || "images[0].source" in e || e.autosize) return;
        const axes = plot.div._fullLayout;
        if (e["xaxis.autorange"] || e["yaxis.autorange"]) plot.zoom = null;
        else if ("xaxis.range[0]" in e || "yaxis.range[0]" in e || "xaxis.range" in e) {
          plot.zoom = { x: [...axes.xaxis.range], y: [...axes.yaxis.range] };
        }
      });
    }
  }

  /** Our own hover: Plotly's would need a heatmap trace, which is what this module avoids. */
  hover(event, plot) {
    const g = plot.geometry;
    const full = plot.div._fullLayout;
    if (!g || !full?.xaxis?.p2d || !g.x.length) return;
    const box = plot.div.getBoundingClientRect();
    const px = event.clientX - box.left - full._size.l;
    const py = event.clientY - box.top - full._size.t;
    if (px < 0 || py < 0 || px > full._size.w || py > full._size.h) {
      this.tip.hidden = true;
      return;
    }
    const i = Math.floor((full.xaxis.p2d(px) - g.left) / g.d);
    const l = Math.round(full.yaxis.p2d(py));
    if (i < 0 || i >= g.x.length || l < 0 || l >= g.layers.length) {
      this.tip.hidden = true;
      return;
    }
    this.showTip(g, l, i, event.clientX, event.clientY);
  }

  showTip(g, l, i, clientX, clientY) {
    this.tip.textContent = `layer ${g.layers[l]} · step ${g.x[i]}\n${g.hover.text(l, i)}`;
    this.tip.hidden = false;
    const host = this.el.getBoundingClientRect();
    this.tip.style.left = `${clientX - host.left + 14}px`;
    this.tip.style.top = `${clientY - host.top + 14}px`;
  }

  keyboard(event, plot) {
    const g = plot.geometry;
    const full = plot.div._fullLayout;
    const moves = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [1, 0], ArrowDown: [-1, 0] };
    if (!g || !full?.xaxis?.d2p || !g.x.length) return;
    const n = g.x.length;
    const c = (plot.cursor ??= { l: g.layers.length - 1, i: n - 1 });
    const step = event.shiftKey ? 10 : 1;
    if (event.key in moves) {
      c.l += moves[event.key][0] * step;
      c.i += moves[event.key][1] * step;
    } else if (event.key === "Home") c.i = 0;
    else if (event.key === "End") c.i = n - 1;
    else return;
    event.preventDefault();
    c.l = Math.max(0, Math.min(g.layers.length - 1, c.l));
    c.i = Math.max(0, Math.min(n - 1, c.i));
    const box = plot.div.getBoundingClientRect();
    const x = box.left + full._size.l + full.xaxis.d2p(g.left + (c.i + 0.5) * g.d);
    const y = box.top + full._size.t + full.yaxis.d2p(c.l);
    this.showTip(g, c.l, c.i, x, y);
  }

  renderRatio(a, b, metric, label, key) {
    if (key !== this.key) this.build(1, key);
    const plot = this.plots[0];
    plot.div.classList.add("ratio");
    const ca = a.metrics[metric];
    const cb = b.metrics[metric];
    const n = Math.min(a.layers.length, b.layers.length);
    const { x, cols, pairs, top } = logRatio(ca, cb, transformFor(metric), n);
    const layers = a.layers.slice(0, n);
    const bound = Math.ceil((top || 1) * 4) / 4;
    plot.painter ??= new Painter(n, { table: DIVERGING_TABLE, blank: BLANK, bad: NON_FINITE });
    cols.forEach((col, i) => plot.painter.paint(i, col, null, -bound, bound));
    const what = metricInfo(metric).scale === "linear" ? `${metric} B − A` : "log10 B − log10 A";
    const fig = figure({
      x, layers, source: plot.painter.url(x.length), range: [-bound, bound], colourscale: DIVERGING,
      barTitle: what, annotations: [],
      title: `B / A · ${metric} · B = ${label(b)}, A = ${label(a)}`,
    });
    const text = (l, i) => {
      const [ia, ib] = pairs[i];
      const d = cols[i][l];
      return `A: ${ca.cols[ia][l] ?? "—"}\nB: ${cb.cols[ib][l] ?? "—"}\n${what} = ${d === null ? "—" : d.toFixed(3)}`;
    };
    this.show(plot, fig, { metric, text }, x, layers, [-bound, bound]);
    plot.div.heat.zmid = 0;
  }
}
