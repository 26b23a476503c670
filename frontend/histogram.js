/**
 * Per-layer histograms over time: each snapshot's 32 bins re-binned onto one common value grid,
 * with the 15th, 50th and 85th percentiles drawn over them (Ioffe & Szegedy 2015, Fig. 1 b, c).
 */

/* global Plotly */
import { CONFIG, SEQUENTIAL, baseLayout } from "./charts.js";
import { formatNumber } from "./format.js";

const GRID_BINS = 64;
export const PERCENTILES = [0.15, 0.5, 0.85];
const PERCENTILE_DASH = ["dot", "solid", "dot"];

/**
 * The q-quantile of the values a histogram counted, assuming values spread evenly within each
 * bin (linear interpolation of the cumulative count); null for an empty histogram.
 */
export function percentile(lo, hi, counts, q) {
  const total = counts.reduce((a, b) => a + b, 0);
  if (!(total > 0)) return null;
  const width = (hi - lo) / counts.length;
  const target = q * total;
  let below = 0;
  for (let k = 0; k < counts.length; k++) {
    const count = counts[k];
    if (count > 0 && below + count >= target) return lo + (k + (target - below) / count) * width;
    below += count;
  }
  return hi;
}

/** Spread each source bin's count over the grid cells it overlaps, in proportion to the overlap. */
export function rebin(lo, hi, counts, gridLo, gridHi, nGrid = GRID_BINS) {
  const out = new Array(nGrid).fill(0);
  const cell = (gridHi - gridLo) / nGrid;
  const width = (hi - lo) / counts.length;
  const clampIndex = (v) => Math.min(nGrid - 1, Math.max(0, Math.floor((v - gridLo) / cell)));
  counts.forEach((count, k) => {
    if (!count) return;
    const a = lo + k * width;
    const b = a + width;
    if (width <= 0 || cell <= 0) {
      out[clampIndex(a)] += count;
      return;
    }
    for (let g = clampIndex(a); g <= clampIndex(b); g++) {
      const overlap = Math.min(b, gridLo + (g + 1) * cell) - Math.max(a, gridLo + g * cell);
      if (overlap > 0) out[g] += (count * overlap) / width;
    }
  });
  return out;
}

const KIND_NAMES = {
  act: "activation h",
  act_grad: "backpropagated dL/dh",
  preact: "activation input u",
};

export class HistogramPanel {
  constructor({ div, layerSelect, kindSelect }, onChange) {
    this.div = div;
    this.layerSelect = layerSelect;
    this.kindSelect = kindSelect;
    this.layerKey = "";
    this.revision = 0;
    layerSelect.addEventListener("change", () => onChange({ layer: Number(layerSelect.value) }));
    kindSelect.addEventListener("change", () => onChange({ hist: kindSelect.value }));
  }

  syncLayers(layers, state) {
    const key = layers.join(",");
    if (key !== this.layerKey) {
      this.layerKey = key;
      this.layerSelect.replaceChildren(...layers.map((name, i) => new Option(name, String(i))));
    }
    const index = state.layer < 0 || state.layer >= layers.length ? layers.length - 1 : state.layer;
    this.layerSelect.value = String(index);
    this.kindSelect.value = state.hist;
    return index;
  }

  render(run, state, label) {
    if (!run) {
      Plotly.react(this.div, [], baseLayout({ height: 300 }), CONFIG);
      return;
    }
    const layer = this.syncLayers(run.layers, state);
    const snaps = run.hist.filter((h) => h[state.hist]?.lo?.[layer] != null);
    let gridLo = Infinity;
    let gridHi = -Infinity;
    for (const h of snaps) {
      gridLo = Math.min(gridLo, h[state.hist].lo[layer]);
      gridHi = Math.max(gridHi, h[state.hist].hi[layer]);
    }
    if (gridHi <= gridLo) gridHi = gridLo + 1e-12;
    const cell = (gridHi - gridLo) / GRID_BINS;
    const y = Array.from({ length: GRID_BINS }, (_, g) => gridLo + (g + 0.5) * cell);
    const columns = snaps.map((h) => {
      const d = h[state.hist];
      return rebin(d.lo[layer], d.hi[layer], d.counts[layer], gridLo, gridHi);
    });
    // Transpose to rows of value bins; log10(1 + count) keeps thin tails visible next to the peak.
    const z = y.map((_, g) => columns.map((c) => Math.log10(1 + c[g])));
    const what = KIND_NAMES[state.hist] ?? state.hist;
    this.revision++;
    const trace = {
      type: "heatmap", x: snaps.map((h) => h.step), y, z, colorscale: SEQUENTIAL,
      colorbar: { title: { text: "log10(1 + count)", side: "right" }, thickness: 12 },
      customdata: y.map((v) => columns.map(() => formatNumber(v))),
      hovertemplate: `step %{x}<br>${what} ≈ %{customdata}<br>log10(1+count) = %{z:.2f}<extra></extra>`,
    };
    const lines = PERCENTILES.map((q, i) => ({
      type: "scatter", mode: "lines", name: `${Math.round(q * 100)}th percentile`,
      x: snaps.map((h) => h.step),
      y: snaps.map((h) => percentile(h[state.hist].lo[layer], h[state.hist].hi[layer], h[state.hist].counts[layer], q)),
      line: { color: "#e4572e", width: 1.5, dash: PERCENTILE_DASH[i] }, // apart from viridis
      hovertemplate: `step %{x}<br>${Math.round(q * 100)}th percentile ≈ %{y:.4g}<extra></extra>`,
    }));
    const title = snaps.length
      ? `${label(run)} · ${what} at ${run.layers[layer]} · lines: 15th, 50th, 85th percentiles`
      : `${label(run)}: no histograms yet (recorded every recording.histogram_every steps)`;
    Plotly.react(this.div, [trace, ...lines], baseLayout({
      title: { text: title, font: { size: 13 }, x: 0.01 },
      height: 320,
      xaxis: { title: { text: "step" } },
      yaxis: { title: { text: `${what} value` }, exponentformat: "e" },
      showlegend: false, // the title names the lines
      datarevision: this.revision,
    }), CONFIG);
  }
}
