/** The data and the decision boundary: training points over the network's class probabilities. */

/* global Plotly */

import { CONFIG, RUN_COLOURS, baseLayout } from "./charts.js";

const CLASS_COLOURS = RUN_COLOURS; // Okabe–Ito: class 0 blue, 1 orange, 2 green, 3 pink, ...
const REFETCH_GAP_MS = 300;

/** Whether a run has a boundary at all: the server's rule (2-D inputs, a task with classes). */
export function hasBoundary(config) {
  return config?.data?.input_dim === 2 && config?.data?.dataset !== "teacher";
}

/** Mix a #rrggbb colour with white: t = 0 white, t = 1 the colour. */
export function tint(hex, t) {
  const c = [1, 3, 5].map((i) => Number.parseInt(hex.slice(i, i + 2), 16));
  const mixed = c.map((v) => Math.round(255 + (v - 255) * Math.min(1, Math.max(0, t))));
  return `rgb(${mixed.join(",")})`;
}

/**
 * The traces for one frame. Two classes: one heatmap of P(class 1), class 0's colour through white
 * to class 1's. More: a heatmap per class over the cells it wins, white to its colour as its
 * probability goes from chance to one. Then the training points, coloured by their class.
 */
export function boundaryTraces(frame) {
  const k = frame.n_classes;
  const common = { type: "heatmap", x: frame.x, y: frame.y, showscale: false, hoverongaps: false };
  const maps = [];
  if (k === 2) {
    maps.push({
      ...common,
      z: frame.prob,
      zmin: 0,
      zmax: 1,
      zsmooth: "best",
      colorscale: [[0, tint(CLASS_COLOURS[0], 0.85)], [0.5, "#ffffff"], [1, tint(CLASS_COLOURS[1], 0.85)]],
      name: "P(class 1)",
      hovertemplate: "x %{x:.2f}, y %{y:.2f}<br>P(class 1) %{z:.3f}<extra></extra>",
    });
  } else {
    for (let c = 0; c < k; c++) {
      const z = frame.prob.map((row, i) => row.map((p, j) => (frame.classes[i][j] === c ? p : null)));
      maps.push({
        ...common,
        z,
        zmin: 1 / k,
        zmax: 1,
        colorscale: [[0, "#ffffff"], [1, tint(CLASS_COLOURS[c % CLASS_COLOURS.length], 0.85)]],
        name: `class ${c}`,
        hovertemplate: `x %{x:.2f}, y %{y:.2f}<br>class ${c}, P %{z:.3f}<extra></extra>`,
      });
    }
  }
  const points = [];
  for (let c = 0; c < k; c++) {
    const idx = frame.points.label.flatMap((label, i) => (label === c ? [i] : []));
    points.push({
      type: "scatter",
      mode: "markers",
      x: idx.map((i) => frame.points.x[i]),
      y: idx.map((i) => frame.points.y[i]),
      name: `class ${c}`,
      marker: { size: 5, color: CLASS_COLOURS[c % CLASS_COLOURS.length], line: { width: 0.6, color: "#ffffff" } },
      hovertemplate: `class ${c}: x %{x:.2f}, y %{y:.2f}<extra></extra>`,
    });
  }
  return [...maps, ...points];
}

export class BoundaryPanel {
  /** els: {div, note}; fetch(id, step) resolves to {ok, status, data} (api.boundary). */
  constructor(els, fetch) {
    this.div = els.div;
    this.note = els.note;
    this.fetch = fetch;
    this.drawn = null; // {id, step, asked}: what the plot shows
    this.wanted = null; // the key of the last request
    this.inFlight = false;
    this.lastFetch = -Infinity;
    this.label = (run) => run.id;
    this.retry = null; // a render that waited for the gap or for the request in flight
    this.timer = null;
  }

  /** Show the first shown run's boundary at the chosen step (state.step; -1 = the latest). */
  render(run, state, label = (r) => r.id) {
    this.label = label;
    if (!run || !hasBoundary(run.summary.config)) {
      this.clear(run ? "The decision boundary is drawn for runs on 2-D inputs with classes." : "");
      return;
    }
    if (!this.mayHaveFrame(run)) {
      this.clear(run.summary.terminal ? "No boundary was recorded for this run." : "The boundary appears with the run's first step.");
      return;
    }
    // Fetched again only when the run may have a newer frame: a scheduled one fell due, or it
    // paused somewhere else (a frame where it parked), or it ended (the last frame).
    const news = run.status === "paused" ? `p${run.summary.steps_done}` : this.frameDue(run);
    const key = `${run.id}@${state.step}@${run.status}@${news}`;
    if (key === this.wanted) return;
    const wait = this.lastFetch + REFETCH_GAP_MS - performance.now();
    if (this.inFlight || wait > 0) {
      this.retry = { run, state }; // the newest request wins; one timer at a time
      if (!this.timer) {
        this.timer = setTimeout(() => {
          this.timer = null;
          if (this.retry) this.render(this.retry.run, this.retry.state);
        }, Math.max(wait, 50));
      }
      return;
    }
    this.retry = null;
    this.wanted = key;
    this.load(run, state.step);
  }

  /** Whether the server has a frame for this run yet (so the page never asks for a missing one). */
  mayHaveFrame(run) {
    const every = run.summary.config?.recording?.boundary_every ?? 0;
    const stepped = (run.summary.records ?? 0) > 0 || run.scalars.lastStep >= 0;
    return (every > 0 && stepped) || run.status === "paused" || run.status === "completed";
  }

  /** The newest scheduled frame step the run has passed: a new value means a new frame. */
  frameDue(run) {
    const every = run.summary.config?.recording?.boundary_every ?? 0;
    const last = Math.max(run.scalars.lastStep, (run.summary.steps_done ?? 0) - 1);
    return every > 0 ? Math.floor(Math.max(0, last) / every) : 0;
  }

  async load(run, asked) {
    this.inFlight = true;
    this.lastFetch = performance.now();
    const key = this.wanted;
    try {
      const r = await this.fetch(run.id, asked);
      if (key !== this.wanted) return; // another run or step was chosen meanwhile
      if (!r.ok) {
        this.clear(`No boundary: ${r.data?.detail ?? r.status}`);
        return;
      }
      this.draw(run, r.data, asked);
    } finally {
      this.inFlight = false;
    }
  }

  draw(run, frame, asked) {
    const k = frame.n_classes;
    const what = k === 2 ? "P(class 1)" : "probability of the predicted class";
    const layout = baseLayout({
      title: { text: `${this.label(run)}, step ${frame.step}: ${what}`, font: { size: 13 } },
      margin: { l: 45, r: 10, t: 30, b: 40 },
      plot_bgcolor: "#d9d9d9", // cells left grey: the network's output was not finite
      // One unit is as long on both axes; the plot box shrinks to fit rather than the range grow.
      xaxis: { title: { text: "x₁ (standardized)" }, range: [frame.x[0], frame.x.at(-1)], zeroline: false, constrain: "domain" },
      yaxis: { title: { text: "x₂" }, range: [frame.y[0], frame.y.at(-1)], zeroline: false, scaleanchor: "x", constrain: "domain" },
      showlegend: true,
      legend: { orientation: "h", y: -0.18 },
      uirevision: run.id,
    });
    this.div.hidden = false; // before drawing: Plotly sizes the plot to its visible box
    Plotly.react(this.div, boundaryTraces(frame), layout, CONFIG);
    this.drawn = { id: run.id, step: frame.step, asked, n_classes: k, steps: frame.steps };
    this.div.dataset.step = String(frame.step);
    this.div.dataset.run = run.id;
    const shown = asked >= 0 ? ` (the latest frame at or before step ${asked})` : "";
    this.note.textContent =
      `Training points of ${k} classes over the network's prediction at step ${frame.step}${shown}; ` +
      `frames at steps ${summariseSteps(frame.steps)}.`;
  }

  clear(message) {
    if (this.drawn) Plotly.purge(this.div);
    this.drawn = null;
    this.wanted = null;
    this.div.hidden = true;
    delete this.div.dataset.step;
    this.note.textContent = message;
  }
}

function summariseSteps(steps) {
  if (steps.length <= 6) return steps.join(", ");
  return `${steps.slice(0, 3).join(", ")}, …, ${steps.slice(-2).join(", ")}`;
}
