/** Shared Plotly plumbing: colour scales, base layouts, and the one-redraw-per-frame scheduler. */

/* global Plotly */

// Viridis (Plotly's stops): perceptually uniform and readable with the common colour-vision
// deficiencies. Listed here because the heatmap paints its pixels itself with the same stops.
export const VIRIDIS = [
  [0, "#440154"], [0.0627, "#48186a"], [0.1255, "#472d7b"], [0.1882, "#424086"],
  [0.251, "#3b528b"], [0.3137, "#33638d"], [0.3765, "#2c728e"], [0.4392, "#26828e"],
  [0.502, "#21918c"], [0.5647, "#1fa088"], [0.6275, "#28ae80"], [0.6902, "#3fbc73"],
  [0.7529, "#5ec962"], [0.8157, "#84d44b"], [0.8784, "#addc30"], [0.9412, "#d8e219"],
  [1, "#fde725"],
];
export const SEQUENTIAL = VIRIDIS;
// Blue-white-orange diverging scale (no red/green pair) for log ratios centred on zero.
export const DIVERGING = [
  [0, "#2166ac"],
  [0.25, "#67a9cf"],
  [0.5, "#f7f7f7"],
  [0.75, "#f1a340"],
  [1, "#b35806"],
];
// Cells that went non-finite are painted in this colour, which Viridis never uses.
export const NON_FINITE = "#e4007c";
// Blank cells (zero or undefined values) show the plot background.
export const BLANK = "#d9d9d9";
export const RUN_COLOURS = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00"];

export const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

export function baseLayout(extra = {}) {
  return {
    margin: { l: 70, r: 20, t: 30, b: 45 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: BLANK,
    font: { family: "system-ui, sans-serif", size: 12 },
    uirevision: "keep", // zoom and pan survive live updates
    ...extra,
  };
}

/** Layer axis: index 0 (input side) first, ticks named after the layers, at most `maxTicks`. */
export function layerAxis(layers, title = "layer (input at bottom)", maxTicks = 20) {
  const every = Math.max(1, Math.ceil(layers.length / Math.max(2, maxTicks)));
  const tickvals = [];
  for (let i = 0; i < layers.length; i += every) tickvals.push(i);
  // The readout always gets a tick; it takes the place of a neighbour that would crowd it.
  if (tickvals.at(-1) !== layers.length - 1) {
    if (layers.length - 1 - tickvals.at(-1) < every / 2) tickvals.pop();
    tickvals.push(layers.length - 1);
  }
  return { title: { text: title }, tickvals, ticktext: tickvals.map((i) => layers[i]), zeroline: false, automargin: true };
}

/**
 * Coalesces redraw requests: each key's callback runs at most once per animation frame, however
 * many stream messages arrive in between.
 */
export class FrameScheduler {
  constructor() {
    this.pending = new Map();
    this.last = new Map(); // key -> time of its last run
    this.handle = null;
  }

  /**
   * Run `fn` on the next frame, replacing any earlier request under `key`. With `minGapMs`, a
   * key runs at most that often (secondary charts need not redraw at 60 Hz during a live run).
   */
  request(key, fn, minGapMs = 0) {
    this.pending.set(key, { fn, minGapMs });
    this.wake();
  }

  wake() {
    if (this.handle === null) this.handle = requestAnimationFrame((now) => this.flush(now));
  }

  flush(now) {
    this.handle = null;
    const jobs = [];
    for (const [key, job] of this.pending) {
      if (now - (this.last.get(key) ?? -Infinity) < job.minGapMs) continue; // not yet: next frame
      jobs.push(job.fn);
      this.last.set(key, now);
      this.pending.delete(key);
    }
    if (this.pending.size) this.wake();
    for (const job of jobs) {
      try {
        job();
      } catch (err) {
        console.warn("redraw failed", err); // one broken chart must not stop the others
      }
    }
  }
}
