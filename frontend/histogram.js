/** Per-layer histograms over time: each snapshot's 32 bins re-binned onto one common value grid. */

/* global Plotly */
import { CONFIG, SEQUENTIAL, baseLayout } from "./charts.js";
import { formatNumber } from "./format.js";

const GRID_BINS = 64;

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
    const what = state.hist === "act" ? "activation h" : "backpropagated dL/dh";
    this.revision++;
    const trace = {
      type: "heatmap", x: snaps.map((h) => h.step), y, z, colorscale: SEQUENTIAL,
      colorbar: { title: { text: "log10(1 + count)", side: "right" }, thickness: 12 },
      customdata: y.map((v) => columns.map(() => formatNumber(v))),
      hovertemplate: `step %{x}<br>${what} ≈ %{customdata}<br>log10(1+count) = %{z:.2f}<extra></extra>`,
    };
    const title = snaps.length
      ? `${label(run)} · ${what} at ${run.layers[layer]}`
      : `${label(run)}: no histograms yet (recorded every recording.histogram_every steps)`;
    Plotly.react(this.div, [trace], baseLayout({
      title: { text: title, font: { size: 13 }, x: 0.01 },
      height: 320,
      xaxis: { title: { text: "step" } },
      yaxis: { title: { text: `${what} value` }, exponentformat: "e" },
      datarevision: this.revision,
    }), CONFIG);
  }
}
