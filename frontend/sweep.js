/** The sweep view: start a sweep (a preset in one click, or the form's config plus chosen axes),
 * see its cells as a grid coloured by one summary and as lines against the first axis, open a
 * cell's run with a click, or pick two cells to compare them. */

/* global Plotly */

import { describeError, sweepApi } from "./api.js";
import { BLANK, CONFIG, NON_FINITE, RUN_COLOURS, VIRIDIS, baseLayout } from "./charts.js";

export const SUMMARIES = [
  { key: "best_val_accuracy", title: "best held-out accuracy", log: false },
  { key: "final_loss", title: "final training loss", log: true },
  { key: "final_val_loss", title: "final held-out loss", log: true },
  { key: "steps_to_target", title: "first step at the target accuracy", log: false },
  { key: "grad_ratio_step0", title: "block1 / last block act_grad_norm at step 0", log: true },
];
const ENDED = new Set(["completed", "cancelled", "failed", "diverged", "interrupted", "deleted"]);

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};
const fmt = (v) => (v === null || v === undefined ? "–" : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(1) : String(Number(v.toPrecision(3))));

/** One label per value of an axis: "relu", or "relu (he_normal)" where `with` fields follow it. */
export function axisLabels(axis) {
  const companions = Object.values(axis.with ?? {});
  return axis.values.map((v, i) => (companions.length ? `${v} (${companions.map((c) => c[i]).join(", ")})` : String(v)));
}

/** Where cell `index` sits on each axis: row-major, the last axis varies fastest. */
export function cellPosition(index, sizes) {
  const at = [];
  for (let k = sizes.length - 1; k >= 0; k--) {
    at.unshift(index % sizes[k]);
    index = Math.floor(index / sizes[k]);
  }
  return at;
}

/** The value a cell is coloured and drawn by; null when it has none (yet). */
export function summaryValue(cell, key) {
  const v = cell.summary?.[key];
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** Panels of the grid: one per combination of the axes after the first two; rows follow axis 1. */
export function gridOf(sweep) {
  const sizes = sweep.axes.map((a) => a.values.length);
  const rows = sizes.length > 1 ? sizes[1] : 1;
  const panels = new Map();
  for (const cell of sweep.cells) {
    const at = cellPosition(cell.index, sizes);
    const key = at.slice(2).join(",");
    if (!panels.has(key)) panels.set(key, { rest: at.slice(2), rows: Array.from({ length: rows }, () => Array(sizes[0]).fill(null)) });
    panels.get(key).rows[sizes.length > 1 ? at[1] : 0][at[0]] = cell;
  }
  return [...panels.values()];
}

/** One line per combination of the axes after the first: its cells along axis 0. */
export function linesOf(sweep) {
  const sizes = sweep.axes.map((a) => a.values.length);
  const lines = new Map();
  for (const cell of sweep.cells) {
    const at = cellPosition(cell.index, sizes);
    const key = at.slice(1).join(",");
    if (!lines.has(key)) lines.set(key, { rest: at.slice(1), cells: Array(sizes[0]).fill(null) });
    lines.get(key).cells[at[0]] = cell;
  }
  return [...lines.values()];
}

/** A Viridis colour for `v` in [lo, hi] (log10 first for log summaries). */
export function colourFor(v, lo, hi) {
  const t = hi > lo ? Math.min(1, Math.max(0, (v - lo) / (hi - lo))) : 0.5;
  let i = 1;
  while (i < VIRIDIS.length - 1 && VIRIDIS[i][0] < t) i++;
  const [[a, ca], [b, cb]] = [VIRIDIS[i - 1], VIRIDIS[i]];
  const u = b > a ? (t - a) / (b - a) : 0;
  const rgb = (c) => [1, 3, 5].map((k) => parseInt(c.slice(k, k + 2), 16));
  const mix = rgb(ca).map((x, k) => Math.round(x + (rgb(cb)[k] - x) * u));
  return `rgb(${mix.join(",")})`;
}

const where = (axes, first, at) => at.map((j, i) => `${axes[first + i].field}=${axisLabels(axes[first + i])[j]}`).join(", ");

export class SweepView {
  /** hooks: {config() the form's config, fields [dotted names], openRun(id), compare(a, b),
   * changed() runs were created or ended, removed(ids) those runs are gone} */
  constructor(container, hooks) {
    this.hooks = hooks;
    this.sweep = null;
    this.summary = SUMMARIES[0].key;
    this.picking = false;
    this.picked = [];
    this.stopFollow = null;
    this.build(container);
  }

  build(container) {
    const $ = (id) => container.querySelector(`#${id}`);
    this.presetBox = $("sweep-presets");
    this.error = $("sweep-error");
    this.select = $("sweep-select");
    this.status = $("sweep-status");
    this.gridBox = $("sweep-grid");
    this.plot = $("sweep-lines");
    this.pickButton = $("sweep-compare");
    const summary = $("sweep-summary");
    summary.replaceChildren(...SUMMARIES.map((s) => new Option(s.title, s.key)));
    summary.addEventListener("change", () => ((this.summary = summary.value), this.render()));
    this.select.addEventListener("change", () => this.show(this.select.value));
    this.pickButton.addEventListener("click", () => this.setPicking(!this.picking));
    $("sweep-cancel").addEventListener("click", () => this.cancel());
    $("sweep-delete").addEventListener("click", () => this.remove());
    this.axisRows = [0, 1].map((i) => ({ field: $(`sweep-field-${i}`), values: $(`sweep-values-${i}`) }));
    for (const row of this.axisRows) row.field.replaceChildren(new Option("(none)", ""), ...this.hooks.fields.map((f) => new Option(f, f)));
    this.axisRows[0].field.value = "training.lr";
    this.axisRows[1].field.value = "model.norm";
    $("sweep-builder").addEventListener("submit", (e) => {
      e.preventDefault();
      this.startFromForm($("sweep-target").value);
    });
  }

  async load() {
    const [presets] = await Promise.all([sweepApi.presets(), this.refreshList()]);
    this.presetBox.replaceChildren(
      ...presets.map((p) => {
        const b = el("button", { type: "button", className: "sweep-preset", title: p.description }, el("strong", { textContent: p.title }), el("span", { textContent: p.description }));
        b.dataset.preset = p.id;
        b.addEventListener("click", () => this.start(p.spec));
        return b;
      }),
    );
  }

  async refreshList(selected = this.sweep?.id) {
    const sweeps = await sweepApi.list();
    this.select.replaceChildren(new Option(sweeps.length ? "choose a sweep" : "no sweeps yet", ""), ...sweeps.map((s) => new Option(`${s.name ?? s.id} — ${s.status} (${s.n_cells} cells)`, s.id)));
    this.select.value = selected && sweeps.some((s) => s.id === selected) ? selected : "";
  }

  /** The form's config as the base, the chosen axes (values comma-separated, JSON or text). */
  startFromForm(target) {
    const parse = (text) => text.split(",").map((t) => t.trim()).filter(Boolean).map((t) => { try { return JSON.parse(t); } catch { return t; } });
    const axes = this.axisRows.filter((r) => r.field.value && r.values.value.trim()).map((r) => ({ field: r.field.value, values: parse(r.values.value) }));
    const spec = { base: this.hooks.config(), axes };
    if (target !== "") spec.target_accuracy = Number(target);
    return this.start(spec);
  }

  async start(spec) {
    const r = await sweepApi.create(spec);
    if (!r.ok) {
      const detail = Array.isArray(r.data?.detail) ? r.data.detail.map((d) => `${(d.loc ?? []).slice(1).join(".")}: ${d.msg}`).join("\n") : describeError(r.data);
      this.error.textContent = `Sweep refused (${r.status}): ${detail}`;
      this.error.hidden = false;
      return null;
    }
    this.error.hidden = true;
    await this.refreshList(r.data.id);
    this.setSweep(r.data);
    this.hooks.changed();
    return r.data;
  }

  async cancel() {
    if (!this.sweep) return;
    await sweepApi.cancel(this.sweep.id);
    await this.show(this.sweep.id);
    this.hooks.changed();
  }

  async show(id) {
    if (!id) return this.setSweep(null);
    this.setSweep(await sweepApi.get(id));
  }

  async remove() {
    if (!this.sweep || !confirm(`Delete this sweep and its ${this.sweep.cells.length} runs?`)) return;
    const runs = this.sweep.cells.map((c) => c.run_id);
    await sweepApi.remove(this.sweep.id);
    this.setSweep(null);
    await this.refreshList(null);
    this.hooks.removed(runs);
  }

  /** Show `sweep`, following its cell events while it has not ended. */
  setSweep(sweep) {
    this.stopFollow?.();
    this.stopFollow = null;
    this.sweep = sweep;
    this.picked = [];
    if (sweep && !ENDED.has(sweep.status)) {
      this.stopFollow = sweepApi.follow(sweep.id, {
        onCell: (cell) => {
          if (this.sweep?.id !== sweep.id) return;
          this.sweep.cells[cell.index] = cell;
          this.render();
        },
        onEnd: (whole) => {
          if (this.sweep?.id !== sweep.id) return;
          this.sweep = whole;
          this.stopFollow = null;
          this.render();
          this.refreshList();
          this.hooks.changed();
        },
      });
    }
    this.render();
  }

  setPicking(on) {
    this.picking = on;
    this.picked = [];
    this.pickButton.setAttribute("aria-pressed", String(on));
    this.render();
  }

  clickCell(cell) {
    if (!this.picking) return this.hooks.openRun(cell.run_id);
    this.picked = this.picked.includes(cell.run_id) ? this.picked.filter((r) => r !== cell.run_id) : [...this.picked, cell.run_id];
    if (this.picked.length === 2) {
      const [a, b] = this.picked;
      this.setPicking(false);
      return this.hooks.compare(a, b);
    }
    this.render();
  }

  render() {
    const s = this.sweep;
    document.body.dataset.sweep = s ? s.status : "";
    this.status.textContent = s ? `${s.name ?? s.id}: ${s.status}, ${s.cells.filter((c) => ENDED.has(c.status)).length}/${s.cells.length} cells done${this.picking ? " — pick two cells to compare" : ""}` : "";
    if (!s) {
      this.gridBox.replaceChildren();
      Plotly.purge(this.plot);
      return;
    }
    this.renderGrid(s);
    this.renderLines(s);
  }

  renderGrid(s) {
    const info = SUMMARIES.find((x) => x.key === this.summary);
    const scaled = (v) => (info.log ? (v > 0 ? Math.log10(v) : null) : v);
    const values = s.cells.map((c) => summaryValue(c, info.key)).map((v) => (v === null ? null : scaled(v))).filter((v) => v !== null);
    const [lo, hi] = [Math.min(...values), Math.max(...values)];
    const x = axisLabels(s.axes[0]);
    const y = s.axes.length > 1 ? axisLabels(s.axes[1]) : [""];
    const tables = gridOf(s).map(({ rest, rows }) => {
      const head = el("tr", {}, el("th", { textContent: s.axes.length > 1 ? `${s.axes[1].field} \\ ${s.axes[0].field}` : s.axes[0].field }), ...x.map((t) => el("th", { scope: "col", textContent: t })));
      const body = rows.map((row, r) => el("tr", {}, el("th", { scope: "row", textContent: y[r] }), ...row.map((cell) => el("td", {}, cell ? this.cellButton(cell, info, scaled, lo, hi) : ""))));
      const caption = rest.length ? el("caption", { textContent: where(s.axes, 2, rest) }) : "";
      return el("table", { className: "sweep-table" }, caption, head, ...body);
    });
    const span = values.length ? `${fmt(info.log ? 10 ** lo : lo)} (purple) to ${fmt(info.log ? 10 ** hi : hi)} (yellow)${info.log ? ", log scale" : ""}` : "no values yet";
    const legend = el("p", { className: "note sweep-legend", textContent: `Colour: ${info.title}, ${span}; magenta: diverged; grey: no value.` });
    this.gridBox.replaceChildren(legend, ...tables);
  }

  cellButton(cell, info, scaled, lo, hi) {
    const v = summaryValue(cell, info.key);
    const diverged = cell.summary?.diverged;
    const ended = ENDED.has(cell.status);
    const b = el("button", { type: "button", className: "sweep-cell", textContent: diverged ? "diverged" : v === null ? (ended ? cell.status : `${cell.status}…`) : fmt(v) });
    b.dataset.index = cell.index;
    b.dataset.run = cell.run_id;
    b.dataset.status = cell.status;
    b.style.background = diverged ? NON_FINITE : v === null || scaled(v) === null ? BLANK : colourFor(scaled(v), lo, hi);
    const light = diverged || v === null || (hi > lo && (scaled(v) - lo) / (hi - lo) < 0.55);
    b.style.color = light && !(v === null && !diverged) ? "#fff" : "#111";
    b.setAttribute("aria-pressed", String(this.picked.includes(cell.run_id)));
    const label = Object.entries(cell.values).map(([k, val]) => `${k}=${val}`).join(", ");
    b.title = `${label}\n${cell.status}; ${info.title}: ${fmt(v)}${this.picking ? "\nclick to pick for comparison" : "\nclick to open this run"}`;
    b.addEventListener("click", () => this.clickCell(cell));
    return b;
  }

  renderLines(s) {
    const info = SUMMARIES.find((x) => x.key === this.summary);
    const axis = s.axes[0];
    const numeric = axis.values.every((v) => typeof v === "number");
    const x = numeric ? axis.values : axisLabels(axis);
    const traces = linesOf(s).map(({ rest, cells }, i) => ({
      x,
      y: cells.map((c) => (c ? summaryValue(c, info.key) : null)),
      name: where(s.axes, 1, rest) || info.key,
      mode: "lines+markers",
      line: { color: RUN_COLOURS[i % RUN_COLOURS.length] },
      marker: { size: 9, color: cells.map((c) => (c?.summary?.diverged ? NON_FINITE : RUN_COLOURS[i % RUN_COLOURS.length])), symbol: cells.map((c) => (c?.summary?.diverged ? "x" : "circle")) },
      text: cells.map((c) => (c?.summary?.diverged ? "diverged" : c?.status ?? "")),
      hovertemplate: "%{x}: %{y}<br>%{text}<extra>%{fullData.name}</extra>",
    }));
    const logX = numeric && axis.values.every((v) => v > 0) && Math.max(...axis.values) / Math.min(...axis.values) >= 10;
    Plotly.react(this.plot, traces, baseLayout({
      plot_bgcolor: "#fff",
      xaxis: { title: { text: axis.field }, type: numeric ? (logX ? "log" : "linear") : "category", gridcolor: "#eee", ...(numeric ? { tickvals: axis.values } : {}) },
      yaxis: { title: { text: info.title }, type: info.log ? "log" : "linear", gridcolor: "#eee", exponentformat: "power" },
      legend: { orientation: "h", y: -0.25 },
      margin: { l: 70, r: 20, t: 20, b: 80 },
    }), CONFIG);
    this.plot.dataset.lines = String(traces.length);
  }
}
