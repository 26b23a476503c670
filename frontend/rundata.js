/** A run's data in the browser: bounded column stores fed by /series history and live records. */

import { nameLayers } from "./format.js";

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
    this.hist = []; // [{step, act: {lo, hi, counts}, act_grad: {...}, preact: {...}}]
    this.histStride = 1;
    this.histSeen = 0;
    this.live = false; // true once the event stream is followed (it replays from the start)
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
      if (values) cols.push(r.step, values);
    }
    this.scalars.push(r.step, [r.loss, r.accuracy, r.grad_norm_total]);
    if ("val_loss" in r && r.step > (this.val.steps.at(-1) ?? -1)) {
      this.val.steps.push(r.step);
      this.val.loss.push(r.val_loss);
      this.val.accuracy.push(r.val_accuracy);
    }
    if (r.histograms) this.pushHistogram(r.step, r.histograms);
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

  /** Steps done: the summary's count, or past it the newest streamed record (the same count). */
  progress() {
    const done = Math.max(this.summary.steps_done ?? 0, this.scalars.lastStep + 1);
    return { done, total: this.summary.config?.training?.steps ?? null };
  }

  /** Where the server found the first non-finite value ({step, layer, metric}), or null. */
  firstNonFinite() {
    const d = this.summary.divergence;
    return d && typeof d === "object" && d.step !== undefined ? d : null;
  }

  /** The server's sentence on where the run first went non-finite, shown as sent. */
  divergenceText() {
    return this.summary.divergence?.message ?? null;
  }
}

/**
 * Rows of A and B that mean the same layer: the readout with the readout, blocks by name from
 * the input side. `note` says what was left out when the depths differ ("" when nothing was).
 */
export function alignLayers(aLayers, bLayers) {
  const inB = new Map(bLayers.map((name, i) => [name, i]));
  const inA = new Set(aLayers);
  const rows = [];
  aLayers.forEach((name, i) => inB.has(name) && rows.push({ name, a: i, b: inB.get(name) }));
  const onlyA = aLayers.map((n, i) => (inB.has(n) ? -1 : i)).filter((i) => i >= 0);
  const onlyB = bLayers.map((n, i) => (inA.has(n) ? -1 : i)).filter((i) => i >= 0);
  const left = [];
  if (onlyA.length) left.push(`A's ${nameLayers(aLayers, onlyA)}`);
  if (onlyB.length) left.push(`B's ${nameLayers(bLayers, onlyB)}`);
  const note = left.length
    ? `A has ${aLayers.length} layers, B has ${bLayers.length}: rows are paired by name (readout with ` +
      `readout, blocks counted from the input); left out: ${left.join(" and ")}.`
    : "";
  return { rows, note };
}

/** Per row, the index of the first column holding a number (Infinity if none): a null after
 *  it is a value that went non-finite, a null before it one the probe never defined. */
function firstFinite(cols, row) {
  for (let i = 0; i < cols.length; i++) if ((cols.cols[i][row] ?? null) !== null) return i;
  return Infinity;
}

/**
 * Columns of B − A (of the transformed values: log10 B − log10 A) at the steps both runs hold,
 * found in one walk over the two step lists, for the row pairs `rows` ([{a, b}] from
 * alignLayers). `pairs` maps each column to its A and B indices; `mask` marks cells where A or B
 * went non-finite (null after that layer held a number), painted like non-finite cells elsewhere.
 */
export function logRatio(ca, cb, tf, rows) {
  const x = [];
  const cols = [];
  const mask = [];
  const pairs = [];
  const startA = rows.map((r) => firstFinite(ca, r.a));
  const startB = rows.map((r) => firstFinite(cb, r.b));
  let top = 0;
  for (let i = 0, j = 0; i < ca.length && j < cb.length; ) {
    if (ca.steps[i] < cb.steps[j]) i++;
    else if (cb.steps[j] < ca.steps[i]) j++;
    else {
      const col = [];
      const bad = [];
      rows.forEach((r, k) => {
        const rawA = ca.cols[i][r.a] ?? null;
        const rawB = cb.cols[j][r.b] ?? null;
        bad.push((rawA === null && i > startA[k]) || (rawB === null && j > startB[k]) ? 1 : 0);
        const va = tf(rawA);
        const vb = tf(rawB);
        const diff = va === null || vb === null ? null : vb - va;
        if (diff !== null && Math.abs(diff) > top) top = Math.abs(diff);
        col.push(diff);
      });
      x.push(ca.steps[i]);
      cols.push(col);
      mask.push(bad);
      pairs.push([i, j]);
      i++;
      j++;
    }
  }
  return { x, cols, mask, pairs, top };
}
