/** A run's data in the browser: bounded column stores fed by /series history and live records. */

// Columns kept per run and metric. Past this, every other column is dropped and only every
// second later record is kept, so memory and draw cost stay flat at 100k steps.
export const MAX_COLUMNS = 2048;
const MAX_HISTOGRAMS = 256;

/** Steps and one value array per step (one entry per layer, or per scalar). */
export class Columns {
  constructor() {
    this.steps = [];
    this.cols = [];
    this.stride = 1;
    this.seen = 0;
    this.lastStep = -Infinity;
    this.tail = false; // the last column is the newest step, off the stride: the next one replaces it
    this.version = 0; // bumps when old columns change (compaction, reseed): charts redraw fully
  }

  get length() {
    return this.steps.length;
  }

  /**
   * Append one step; false for a duplicate. A step the stride would skip still replaces a
   * provisional last column, so the newest step is always shown while old ones thin out.
   */
  push(step, values) {
    if (step <= this.lastStep) return false;
    this.lastStep = step;
    const onStride = this.seen++ % this.stride === 0;
    if (this.tail) {
      this.steps[this.steps.length - 1] = step;
      this.cols[this.cols.length - 1] = values;
    } else {
      this.steps.push(step);
      this.cols.push(values);
    }
    this.tail = !onStride;
    if (this.steps.length > MAX_COLUMNS) this.compact();
    return true;
  }

  /** Keep the later column of each pair: the newest (where a divergence shows) always survives. */
  compact() {
    const keep = (_, i, all) => i % 2 === 1 || i === all.length - 1;
    this.steps = this.steps.filter(keep);
    this.cols = this.cols.filter(keep);
    this.stride *= 2;
    this.version++;
  }

  /** Replace everything by server history ({steps, values[layer][i]}), unless live data is ahead. */
  seed(steps, valuesByRow) {
    if (!steps.length || steps[steps.length - 1] <= this.lastStep) return false;
    this.steps = steps.slice();
    this.cols = steps.map((_, i) => valuesByRow.map((row) => row[i] ?? null));
    this.lastStep = steps[steps.length - 1];
    this.stride = 1;
    this.seen = 0;
    this.tail = false;
    this.version++;
    return true;
  }

  /** Index of the column at `step`, or of the latest column before it. */
  indexAt(step) {
    let lo = 0;
    let hi = this.steps.length - 1;
    if (hi < 0) return -1;
    if (step < 0 || step >= this.steps[hi]) return hi;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.steps[mid] <= step) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

/** Whether a run has ended for good; the server says so in every summary. */
export const isTerminal = (summary) => summary.terminal === true;

/** Everything the charts need about one run. */
export class RunData {
  constructor(summary, metrics) {
    this.id = summary.id;
    this.summary = summary;
    this.layers = summary.layers; // named by the server, input to readout
    this.metrics = Object.fromEntries(metrics.map((m) => [m, new Columns()]));
    this.scalars = new Columns(); // [loss, accuracy, grad_norm_total]
    this.val = { steps: [], loss: [], accuracy: [] };
    this.hist = []; // [{step, act: {lo, hi, counts}, act_grad: {...}}]
    this.histStride = 1;
    this.histSeen = 0;
    this.live = false; // true once the event stream is followed (it replays from the start)
    this.everFinite = Object.fromEntries(metrics.map((m) => [m, new Uint8Array(256)]));
    this.firstBad = null; // {step, layer, metric}: first finite -> non-finite cell seen here
    this.revision = 0; // bumps on any change: widgets redraw on the next animation frame
  }

  get status() {
    return this.summary.status;
  }

  ingest(records) {
    for (const r of records) this.ingestOne(r);
    if (records.length) this.revision++;
  }

  ingestOne(r) {
    for (const [metric, cols] of Object.entries(this.metrics)) {
      const values = r.layers?.[metric];
      if (!values) continue;
      this.watchNonFinite(r.step, metric, values);
      cols.push(r.step, values);
    }
    this.scalars.push(r.step, [r.loss, r.accuracy, r.grad_norm_total]);
    if ("val_loss" in r && r.step > (this.val.steps.at(-1) ?? -1)) {
      this.val.steps.push(r.step);
      this.val.loss.push(r.val_loss);
      this.val.accuracy.push(r.val_accuracy);
    }
    if (r.histograms) this.pushHistogram(r.step, r.histograms);
  }

  /** A cell is non-finite when it is null after the same layer and metric held a number. */
  watchNonFinite(step, metric, values) {
    let seen = this.everFinite[metric];
    if (seen.length < values.length) {
      const grown = new Uint8Array(values.length);
      grown.set(seen);
      this.everFinite[metric] = seen = grown;
    }
    for (let l = 0; l < values.length; l++) {
      if (values[l] !== null) seen[l] = 1;
      else if (seen[l] && !this.firstBad) {
        this.firstBad = { step, layer: this.layers[l] ?? `layer ${l}`, metric };
      }
    }
  }

  pushHistogram(step, histograms) {
    if (this.hist.length && step <= this.hist.at(-1).step) return;
    if (this.histSeen++ % this.histStride !== 0) return;
    this.hist.push({ step, ...histograms });
    if (this.hist.length > MAX_HISTOGRAMS) {
      this.hist = this.hist.filter((_, i, all) => i % 2 === 1 || i === all.length - 1);
      this.histStride *= 2;
    }
  }

  /** The first non-finite value: the server's verdict ({step, layer, metric}) first, else ours. */
  firstNonFinite() {
    const d = this.summary.divergence;
    if (d && typeof d === "object" && d.step !== undefined) return d;
    return this.firstBad;
  }

  /** The server's sentence on where the run first went non-finite, shown as sent. */
  divergenceText() {
    return this.summary.divergence?.message ?? null;
  }
}

/**
 * Columns of B − A (of the transformed values: log10 B − log10 A) at the steps both runs hold,
 * found in one walk over the two step lists. `pairs` maps each column to its A and B indices.
 */
export function logRatio(ca, cb, tf, rows) {
  const x = [];
  const cols = [];
  const pairs = [];
  let top = 0;
  for (let i = 0, j = 0; i < ca.length && j < cb.length; ) {
    if (ca.steps[i] < cb.steps[j]) i++;
    else if (cb.steps[j] < ca.steps[i]) j++;
    else {
      const col = [];
      for (let l = 0; l < rows; l++) {
        const va = tf(ca.cols[i][l] ?? null);
        const vb = tf(cb.cols[j][l] ?? null);
        const diff = va === null || vb === null ? null : vb - va;
        if (diff !== null && Math.abs(diff) > top) top = Math.abs(diff);
        col.push(diff);
      }
      x.push(ca.steps[i]);
      cols.push(col);
      pairs.push([i, j]);
      i++;
      j++;
    }
  }
  return { x, cols, pairs, top };
}
