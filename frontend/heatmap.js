/** Heatmaps of one metric over layer × step: a single run, runs side by side on one scale, or log B − log A. */

/* global Plotly */
import { BLANK, CONFIG, DIVERGING, NON_FINITE, SEQUENTIAL } from "./charts.js";
import { formatNumber } from "./format.js";
import { Grid, divergenceCallout, figure, marks, roundRange } from "./heatfigure.js";
import { colourLabel, metricInfo, transformFor } from "./metrics.js";
import { Painter, colourTable } from "./painter.js";
import { alignLayers, logRatio } from "./rundata.js";

// Plotly redraws a whole heatmap trace on any change (~100 ms for 100 × 1000 cells), so the cells
// are painted into an image here, one pixel per cell, and only new columns are painted per
// update; Plotly draws that image under its axes, colour bar and annotations.
const SEQUENTIAL_TABLE = colourTable(SEQUENTIAL);
const DIVERGING_TABLE = colourTable(DIVERGING);
const MOVES = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [1, 0], ArrowDown: [-1, 0] };

const lost = (err) => console.warn("heatmap update dropped", err);

/** The new [lo, hi] of `axis` a plotly_relayout event reports (a zoom or pan), else null. */
function rangeIn(event, axis, current) {
  if (Array.isArray(event[`${axis}.range`])) return [...event[`${axis}.range`]];
  const lo = event[`${axis}.range[0]`];
  const hi = event[`${axis}.range[1]`];
  return lo === undefined && hi === undefined ? null : [lo ?? current[0], hi ?? current[1]];
}

export class HeatmapPanel {
  /** `note` receives hints (ratio needs two runs, how layers were paired); `onPick({step, layer,
   *  index})` is called when a cell is clicked or chosen with Enter. */
  constructor(container, note = document.createElement("p"), onPick = () => {}) {
    this.el = container;
    this.noteEl = note;
    this.onPick = onPick;
    this.key = null;
    this.step = -1;
    this.plots = []; // [{div, grid, painter, range, geometry, ranges, zoom, cursor}]
    this.hovered = null; // {plot, fx, fy, clientX, clientY}: the pointer, as fractions of the axes
    this.tip = Object.assign(document.createElement("div"), { className: "hm-tip", hidden: true });
    this.tip.setAttribute("role", "status");
  }

  /** Draw `runs` for the state's metric and view; only new columns are painted. */
  render(runs, state, label) {
    const ratio = state.view === "ratio" && runs.length >= 2;
    const view = ratio ? "ratio" : state.view === "compare" ? "compare" : "single";
    const shown = view === "compare" ? runs : runs.slice(0, ratio ? 2 : 1);
    const notes = [];
    if (state.view === "ratio" && !ratio && runs.length) notes.push("The ratio view needs two runs: tick a second run in the list.");
    this.step = state.step ?? -1;
    if (!shown.length) {
      this.setNote("");
      return this.message("Run a preset or pick a run from the list to see its heatmap.");
    }
    const key = [view, state.metric, ...shown.map((r) => r.id)].join("|");
    if (ratio) notes.push(this.renderRatio(shown[0], shown[1], state.metric, label, key));
    else {
      if (key !== this.key) {
        this.build(shown.length, key);
        this.plots.forEach((p, i) => (p.grid = new Grid(shown[i], state.metric)));
      } else {
        // The same runs: columns that were compacted or reseeded are read again from the start
        // (and all repainted), while the plot, and a zoom the user made on it, stay.
        for (const [i, p] of this.plots.entries()) {
          if (p.grid.stale) p.grid = new Grid(shown[i], state.metric);
          else p.grid.append();
        }
      }
      this.drawRuns(view, state.metric, label);
    }
    this.setNote(notes.filter(Boolean).join(" "));
  }

  setNote(text) {
    this.noteEl.textContent = text;
    this.noteEl.hidden = !text;
  }

  message(text) {
    this.build(0, null);
    this.el.append(Object.assign(document.createElement("p"), { className: "empty", textContent: text }));
  }

  build(count, key) {
    for (const p of this.plots) Plotly.purge(p.div);
    this.key = key;
    this.hideTip(); // a tooltip of the old metric or run must not stay over the new heatmap
    this.el.replaceChildren();
    this.el.classList.toggle("grid2", count > 1);
    this.plots = Array.from({ length: count }, () => this.makePlot());
    this.el.append(this.tip);
  }

  makePlot() {
    const div = Object.assign(document.createElement("div"), { className: "plot heatmap" });
    this.el.append(div);
    const plot = { div, grid: null, painter: null, range: null, geometry: null, ranges: null, zoom: null, cursor: null };
    div.addEventListener("mouseleave", () => this.hideTip());
    // Keyboard: focus the plot, then arrows walk the cells (Shift: 10 at a time), Enter picks.
    div.tabIndex = 0;
    div.setAttribute("aria-label", "heatmap: arrow keys read the cells, Home and End jump to the first and last step, Enter shows that step and layer below");
    div.addEventListener("keydown", (e) => this.keyboard(e, plot));
    div.addEventListener("blur", () => {
      plot.focused = false;
      this.hideTip();
      this.refreshMarks(plot);
    });
    return plot;
  }

  hideTip() {
    this.hovered = null;
    this.tip.hidden = true;
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
      const fig = figure({
        x: grid.x, layers: grid.layers, source: plot.painter.url(grid.x.length), range,
        colourscale: SEQUENTIAL, barTitle: colourLabel(metric),
        title: `${label(grid.run)} · ${metric}`, annotations: divergenceCallout(grid.run, grid.layers),
      });
      plot.div.dataset.run = grid.run.id;
      this.show(plot, fig, (l, i) => grid.hover(l, i, metric), grid.x, grid.layers, range);
    }
  }

  show(plot, fig, text, x, layers, range) {
    plot.geometry = { left: fig.left, d: fig.d, x, layers, text };
    this.apply(plot, fig, layers.length);
    plot.div.dataset.columns = String(x.length);
    // A tooltip under a still pointer follows the data as it streams in.
    if (this.hovered?.plot === plot) this.showHovered();
    plot.div.heat = { layers, columns: x.length, lastStep: x.at(-1), zmin: range[0], zmax: range[1], colourbar: fig.traces[1].marker.colorbar.title.text };
  }

  /**
   * A full Plotly.react costs ~100 ms here whatever changed, so a live update that only adds
   * columns swaps the image, the step range and the marks in one relayout (~5 ms). A zoom the
   * user made is kept: the step range then stays where they put it.
   */
  apply(plot, fig, rows) {
    const { layout, traces } = fig;
    const home = { x: [fig.left, fig.left + fig.span], y: [-0.5, rows - 0.5] };
    const shapes = this.marksFor(plot);
    const signature = JSON.stringify([layout.title.text, layout.annotations, traces[1].marker, rows]);
    if (plot.signature === signature) {
      const image = layout.images[0];
      const update = { "images[0].source": image.source, "images[0].x": image.x, "images[0].sizex": image.sizex };
      // The range every time, the user's zoom when there is one: a rebuild still in flight
      // when they zoomed cannot leave its own range behind.
      update["xaxis.range"] = plot.zoom?.x ?? home.x;
      if (plot.zoom) update["yaxis.range"] = plot.zoom.y;
      if (JSON.stringify(shapes) !== plot.shapes) update.shapes = shapes;
      Plotly.relayout(plot.div, update).catch(lost); // the plot may be rebuilt meanwhile
    } else {
      layout.xaxis.range = plot.zoom?.x ?? home.x;
      layout.yaxis.range = plot.zoom?.y ?? home.y;
      layout.shapes = shapes;
      delete layout.uirevision;
      Plotly.react(plot.div, traces, layout, CONFIG).catch(lost);
      plot.signature = signature;
      if (!plot.listening) this.listen(plot);
    }
    plot.shapes = JSON.stringify(shapes);
    plot.ranges = plot.zoom ?? home;
  }

  listen(plot) {
    plot.listening = true;
    plot.div.on("plotly_relayout", (e) => {
      // Our own updates may report after they return, or while another is applied (the image
      // loads asynchronously): they are told apart by what they carry, the image source (live
      // updates) or only shapes (marks); a zoom or pan by the user carries neither.
      if ("images[0].source" in e || e.autosize || !plot.ranges) return;
      if (e["xaxis.autorange"] || e["yaxis.autorange"]) plot.zoom = null;
      else {
        const x = rangeIn(e, "xaxis", plot.ranges.x);
        const y = rangeIn(e, "yaxis", plot.ranges.y);
        if (x || y) plot.ranges = plot.zoom = { x: x ?? plot.ranges.x, y: y ?? plot.ranges.y };
      }
    });
    plot.div.on("plotly_hover", (e) => {
      const [xv, yv] = [e.xvals?.[0], e.yvals?.[0]];
      if (xv === undefined || yv === undefined || !plot.ranges) return;
      const { x, y } = plot.ranges;
      const fx = (xv - x[0]) / (x[1] - x[0]);
      const fy = (yv - y[0]) / (y[1] - y[0]);
      this.hovered = { plot, fx, fy, clientX: e.event?.clientX ?? 0, clientY: e.event?.clientY ?? 0 };
      this.showHovered();
    });
    plot.div.on("plotly_unhover", () => this.hideTip());
    plot.div.on("plotly_click", (e) => {
      const cell = this.cellAt(plot, e.xvals?.[0], e.yvals?.[0]);
      if (cell) this.pick(plot, cell);
    });
  }

  /** The cell at data coordinates (xv, yv): column i, layer row l; null outside the image. */
  cellAt(plot, xv, yv) {
    const g = plot.geometry;
    if (!g || xv === undefined || yv === undefined || !g.x.length) return null;
    const i = Math.floor((xv - g.left) / g.d);
    const l = Math.round(yv);
    return i < 0 || i >= g.x.length || l < 0 || l >= g.layers.length ? null : { i, l };
  }

  /** The hovered point, mapped through the axes as they are now (they move as data arrives). */
  showHovered() {
    const { plot, fx, fy, clientX, clientY } = this.hovered;
    const { x, y } = plot.ranges;
    const cell = this.cellAt(plot, x[0] + fx * (x[1] - x[0]), y[0] + fy * (y[1] - y[0]));
    if (!cell) {
      this.tip.hidden = true;
      return;
    }
    const host = this.el.getBoundingClientRect();
    this.showTip(plot.geometry, cell, clientX - host.left + 14, clientY - host.top + 14);
  }

  showTip(g, { l, i }, left, top) {
    this.tip.textContent = `layer ${g.layers[l]} · step ${g.x[i]}\n${g.text(l, i)}`;
    this.tip.hidden = false;
    this.tip.style.left = `${left}px`;
    this.tip.style.top = `${top}px`;
  }

  pick(plot, { l, i }) {
    const g = plot.geometry;
    this.onPick({ step: g.x[i], layer: g.layers[l], index: l });
  }

  marksFor(plot) {
    const g = plot.geometry;
    return marks(this.step, plot.focused ? plot.cursor : null, g.left, g.d);
  }

  refreshMarks(plot) {
    if (!plot.geometry || !plot.signature) return;
    const shapes = this.marksFor(plot);
    if (JSON.stringify(shapes) === plot.shapes) return;
    plot.shapes = JSON.stringify(shapes);
    Plotly.relayout(plot.div, { shapes }).catch(lost);
  }

  keyboard(event, plot) {
    const g = plot.geometry;
    if (!g || !g.x.length) return;
    const n = g.x.length;
    const c = (plot.cursor ??= { l: g.layers.length - 1, i: n - 1 });
    const step = event.shiftKey ? 10 : 1;
    if (event.key in MOVES) {
      c.l += MOVES[event.key][0] * step;
      c.i += MOVES[event.key][1] * step;
    } else if (event.key === "Home") c.i = 0;
    else if (event.key === "End") c.i = n - 1;
    else if (event.key !== "Enter") return;
    event.preventDefault();
    c.l = Math.max(0, Math.min(g.layers.length - 1, c.l));
    c.i = Math.max(0, Math.min(n - 1, c.i));
    if (event.key === "Enter") this.pick(plot, c);
    plot.focused = true;
    this.hovered = null;
    // The cell is outlined on the plot; its reading sits in a fixed corner of the plot.
    this.showTip(g, c, plot.div.offsetLeft + 80, plot.div.offsetTop + 34);
    this.refreshMarks(plot);
  }

  renderRatio(a, b, metric, label, key) {
    if (key !== this.key) this.build(1, key);
    const plot = this.plots[0];
    plot.div.classList.add("ratio");
    const ca = a.metrics[metric];
    const cb = b.metrics[metric];
    const { rows, note } = alignLayers(a.layers, b.layers);
    const { x, cols, mask, pairs, top } = logRatio(ca, cb, transformFor(metric), rows);
    const layers = rows.map((r) => r.name);
    const bound = Math.ceil((top || 1) * 4) / 4;
    if (plot.painter?.rows !== rows.length) plot.painter = new Painter(rows.length, { table: DIVERGING_TABLE, blank: BLANK, bad: NON_FINITE });
    cols.forEach((col, i) => plot.painter.paint(i, col, mask[i], -bound, bound));
    const what = metricInfo(metric).scale === "linear" ? `${metric} B − A` : "log10 B − log10 A";
    const fig = figure({
      x, layers, source: plot.painter.url(x.length), range: [-bound, bound], colourscale: DIVERGING,
      barTitle: what, annotations: [],
      title: `B / A · ${metric} · B = ${label(b)}, A = ${label(a)}`,
    });
    const text = (l, i) => {
      const [ia, ib] = pairs[i];
      const d = cols[i][l];
      const value = (cols_, at, row) => (mask[i][l] && cols_.cols[at][row] === null ? "non-finite" : formatNumber(cols_.cols[at][row]));
      return `A: ${value(ca, ia, rows[l].a)}\nB: ${value(cb, ib, rows[l].b)}\n${what} = ${d === null ? "—" : d.toFixed(2)}`;
    };
    this.show(plot, fig, text, x, layers, [-bound, bound]);
    plot.div.heat.zmid = 0;
    plot.div.heat.pairs = rows.map((r) => [a.layers[r.a], b.layers[r.b]]);
    return note;
  }
}
