/** The heatmap's data and figure: one run's rows grown in place, and the Plotly figure around its image. */

import { NON_FINITE, baseLayout, layerAxis } from "./charts.js";
import { formatNumber } from "./format.js";
import { colourLabel, transformFor } from "./metrics.js";

/** One run's rows, grown in place: z colour values, raw exact numbers, mask 1 = non-finite. */
export class Grid {
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
    const z = this.z[l][i];
    return `${metric} = ${formatNumber(v)}\n${colourLabel(metric)} = ${z === null ? "— (zero)" : z.toFixed(2)}`;
  }
}

/** Outward to a quarter decade, so a slowly drifting range does not repaint every frame. */
export function roundRange(lo, hi) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  const a = Math.floor(lo * 4) / 4;
  const b = Math.ceil(hi * 4) / 4;
  return b > a ? [a, b] : [a, a + 0.25];
}

function heightFor(layers) {
  return Math.max(300, Math.min(640, 160 + layers * 4));
}

/** The callout at the server's first non-finite value, named as the server named it. */
export function divergenceCallout(run, layers) {
  const bad = run.firstNonFinite();
  const row = bad ? layers.indexOf(bad.layer) : -1;
  if (row < 0) return [];
  return [{
    x: bad.step, y: row, text: `first non-finite: ${bad.layer}, step ${bad.step} (${bad.metric})`,
    showarrow: true, arrowcolor: "#1b1f24", arrowwidth: 1.5, ax: -70, ay: row > layers.length / 2 ? 35 : -35,
    bgcolor: "#ffffff", bordercolor: NON_FINITE, borderwidth: 2, font: { color: "#1b1f24" },
  }];
}

/** Marks: the chosen step (a line over every layer) and the keyboard's cell (an outline). */
export function marks(step, cursor, left, d) {
  const shapes = [];
  if (step >= 0) {
    for (const [color, width, dash] of [["#ffffff", 4, "solid"], ["#1b1f24", 2, "dash"]]) {
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: step, x1: step, y0: 0, y1: 1, line: { color, width, dash } });
    }
  }
  if (cursor) {
    shapes.push({
      type: "rect", xref: "x", yref: "y", x0: left + cursor.i * d, x1: left + (cursor.i + 1) * d,
      y0: cursor.l - 0.5, y1: cursor.l + 0.5, line: { color: "#e69f00", width: 3 },
    });
  }
  return shapes;
}

/**
 * An image spanning the steps, plus two invisible traces: the data extent and the colour bar.
 * Hover and click events fire anywhere over the plot (hoveranywhere / clickanywhere) with the
 * cursor in data coordinates, which is how the panel finds the cell under the pointer.
 */
export function figure({ x, layers, source, range, colourscale, barTitle, title, annotations }) {
  const n = x.length;
  const d = n > 1 ? (x[n - 1] - x[0]) / (n - 1) : 1;
  const left = (x[0] ?? 0) - d / 2;
  const span = n * d;
  // One empty cell covering the image: heatmaps autorange without padding, so the axes fit
  // the image exactly (a double-click's autorange returns to it).
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
    hovermode: "closest",
    hoveranywhere: true,
    clickanywhere: true,
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
