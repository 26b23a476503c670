/** Wires the widgets together: one state object, the URL hash, the run data and the redraw loop. */

import { api, describeError, followRun } from "./api.js";
import { FrameScheduler } from "./charts.js";
import { CurvesPanel } from "./curves.js";
import { ConfigForm } from "./form.js";
import { renderGuide, renderMetricNote } from "./help.js";
import { HeatmapPanel } from "./heatmap.js";
import { HistogramPanel } from "./histogram.js";
import { METRICS, METRIC_NAMES, colourLabel } from "./metrics.js";
import { renderPresets } from "./presets.js";
import { ProfilePanel } from "./profile.js";
import { MAX_COLUMNS, RunData, isTerminal } from "./rundata.js";
import { RunList, runLabel } from "./runlist.js";
import { decodeState, encodeState } from "./state.js";
import { BoundaryPanel } from "./boundary.js";
import { RunControls } from "./controls.js";
import { LessonPanel } from "./lesson.js";
import { AnalysisCache, DiagnosisPanel, profileOverlay } from "./analysis.js";
import { PhasePanel } from "./phase.js";
import { SpectrumPanel } from "./spectrum.js";

// Finished runs with more recorded steps than this are not replayed through the event stream:
// their heatmaps come from /series alone (downsampled by the server).
const REPLAY_LIMIT = 5000;
const POLL_MS = 2000;
const MAX_SHOWN = 4;

const $ = (id) => document.getElementById(id);
const app = {
  state: decodeState(location.hash, METRIC_NAMES),
  runs: new Map(), // id -> RunData
  summaries: [],
  stops: new Map(), // id -> closes its event stream
  presetTitles: new Map(), // canonical config JSON -> preset title, to name runs started from one
  scheduler: new FrameScheduler(),
};
window.depthscope = app; // for the browser tests and the render benchmark

/** Same keys in the same order, so equal configs give equal strings. */
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

const summaryLabel = (summary) => app.presetTitles.get(canonical(summary.config)) ?? runLabel(summary);
const label = (run) => summaryLabel(run.summary);
const shownRuns = () => app.state.runs.map((id) => app.runs.get(id)).filter(Boolean);

// -- state <-> URL ----------------------------------------------------------------------------
function setState(patch) {
  Object.assign(app.state, patch);
  const hash = encodeState(app.state);
  const url = hash === "#" ? location.pathname : hash; // default state: a clean URL
  if (url !== location.hash && !(url === location.pathname && !location.hash)) history.replaceState(null, "", url);
  $("share").value = location.href;
  syncControls();
  for (const id of app.state.runs) openRun(id);
  app.lesson?.sync(app.state);
  redrawAll();
}

function syncControls() {
  $("metric").value = app.state.metric;
  for (const radio of document.querySelectorAll("input[name=view]")) radio.checked = radio.value === app.state.view;
  renderMetricNote($("metric-note"), app.state.metric);
}

// -- redraws: at most one per widget per animation frame ---------------------------------------
function redrawAll() {
  // With no run shown, the secondary charts give way to a one-line hint instead of empty axes.
  const empty = shownRuns().length === 0;
  document.body.dataset.empty = String(empty);
  const s = app.scheduler;
  s.request("heatmap", () => app.heatmap.render(shownRuns(), app.state, label));
  s.request("status", renderStatus, 200);
  s.request("controls", () => app.controls?.render(shownRuns()), 100);
  s.request("boundary", () => app.boundary?.render(shownRuns()[0], app.state, label), 250);
  s.request("analysis", renderAnalysis, 250);
  if (empty) return; // hidden charts are not drawn: Plotly would size them for a hidden box
  // The heatmap follows every frame; the other charts redraw fully, so a few times a second.
  const ifShown = (draw) => () => shownRuns().length && draw(shownRuns());
  s.request("curves", ifShown((runs) => app.curves.render(runs, label)), 250);
  s.request("profile", ifShown((runs) => app.profile.render(runs, app.state, label)), 100);
  s.request("hist", ifShown((runs) => app.histogram.render(runs[0], app.state, label)), 500);
}

/** The diagnosis above the heatmap and the spectrum, for the first shown run (analysis.js). */
function renderAnalysis() {
  app.diagnosis?.render(shownRuns()[0], label);
  app.spectrum?.render(shownRuns()[0], label);
}

function renderStatus() {
  const lines = shownRuns().map((run) => {
    const d = run.divergenceText();
    return { text: `${label(run)}: ${run.status}, step ${Math.max(0, run.scalars.lastStep)}${d ? ` — ${d}` : ""}`, bad: Boolean(d) };
  });
  $("run-status").replaceChildren(...lines.map(({ text, bad }) => Object.assign(document.createElement("li"), { textContent: text, className: bad ? "bad" : "" })));
  const alerts = shownRuns().map((r) => r.divergenceText() && `${label(r)}: ${r.divergenceText()}`).filter(Boolean);
  $("divergence").textContent = alerts.join("\n");
  $("divergence").hidden = alerts.length === 0;
  const ratio = app.state.view === "ratio" && shownRuns().length >= 2;
  const scale = colourLabel(app.state.metric);
  $("legend-note").textContent = ratio
    ? `Colour: ${scale} of B minus that of A (orange: B larger, blue: A larger, white: equal).`
    : `Colour: ${scale} (Viridis${app.state.view === "compare" ? ", one scale for all runs" : ""}).`;
  const focus = shownRuns()[0];
  for (const format of ["csv", "json"]) {
    const link = $(`export-${format}`);
    link.hidden = !focus;
    if (focus) link.href = api.exportUrl(focus.id, format);
  }
}

// -- run data: history from /series, live records from the event stream ----------------------
async function openRun(id) {
  if (app.runs.has(id)) return;
  app.runs.set(id, null); // placeholder: opened once, however often it is asked for
  let summary;
  try {
    summary = await api.run(id);
  } catch {
    app.runs.delete(id);
    setState({ runs: app.state.runs.filter((r) => r !== id) }); // a stale link to a deleted run
    return;
  }
  const run = new RunData(summary, METRIC_NAMES);
  app.runs.set(id, run);
  const recorded = summary.records ?? (summary.steps_done ?? 0) / (summary.config?.recording?.record_every ?? 1);
  if (!isTerminal(summary) || recorded <= REPLAY_LIMIT) follow(run);
  await loadSeries(run, app.state.metric);
}

/** Downsampled history of one metric; without a replay, of the loss and accuracy curves too. */
async function loadSeries(run, metric) {
  try {
    const s = await api.series(run.id, metric, MAX_COLUMNS);
    if (run.metrics[metric].seed(s.steps, s.values)) run.revision++;
    if (!run.live && run.scalars.length === 0) {
      const [loss, accuracy] = await Promise.all(["loss", "accuracy"].map((m) => api.series(run.id, m, MAX_COLUMNS)));
      run.scalars.seed(loss.steps, [loss.values[0], accuracy.values[0] ?? [], []]);
    }
  } catch (err) {
    console.warn(`no history for ${run.id}`, err);
  }
  redrawAll();
}

function follow(run) {
  run.live = true;
  const stop = followRun(run.id, {
    onRecords: (records) => {
      run.ingest(records);
      redrawAll();
    },
    onStatus: (data) => {
      if (data?.status) run.summary = { ...run.summary, ...data };
      refreshSummary(run);
    },
    onEnd: () => {
      app.stops.delete(run.id);
      refreshSummary(run);
    },
  });
  app.stops.set(run.id, stop);
}

async function refreshSummary(run) {
  try {
    run.summary = await api.run(run.id);
  } catch {
    return;
  }
  redrawAll();
  refreshList();
}

async function refreshList() {
  try {
    app.summaries = await api.runs();
  } catch {
    return;
  }
  if (Array.isArray(app.summaries.runs)) app.summaries = app.summaries.runs;
  for (const s of app.summaries) {
    const run = app.runs.get(s.id);
    if (run && run.summary.status !== s.status) {
      run.summary = { ...run.summary, ...s };
      redrawAll();
    }
  }
  app.runList.render(app.summaries, app.state.runs);
  app.diagnosis?.decorate($("run-rows"), app.summaries);
}

// -- actions -----------------------------------------------------------------------------------
async function startRun(config) {
  const button = $("run");
  button.disabled = true;
  try {
    const r = await api.createRun(config);
    if (!r.ok) {
      app.form.showErrors(r.data, r.status);
      if (r.status === 429) app.form.showErrors({ detail: `The queue is full: ${describeError(r.data)}` }, 429);
      return;
    }
    app.form.clearErrors();
    setState({ runs: [r.data.id, ...app.state.runs.filter((id) => id !== r.data.id)].slice(0, MAX_SHOWN), step: -1 });
    refreshList();
  } finally {
    button.disabled = false;
  }
}

function toggleRun(id, shown) {
  const rest = app.state.runs.filter((r) => r !== id);
  setState({ runs: shown ? [...rest, id].slice(-MAX_SHOWN) : rest });
  refreshList();
}

async function cancelRun(id) {
  const r = await api.cancel(id);
  if (!r.ok) console.warn(`cancel ${id}: ${r.status} ${describeError(r.data)}`);
  refreshList();
}

async function deleteRun(id) {
  app.stops.get(id)?.();
  app.stops.delete(id);
  const r = await api.remove(id);
  if (!r.ok && r.status !== 404) console.warn(`delete ${id}: ${r.status} ${describeError(r.data)}`);
  app.runs.delete(id);
  app.analysis?.forget(id);
  setState({ runs: app.state.runs.filter((x) => x !== id) });
  refreshList();
}

function setMetric(metric) {
  setState({ metric });
  for (const run of shownRuns()) if (!run.live || run.metrics[metric].length === 0) loadSeries(run, metric);
}

// -- start -------------------------------------------------------------------------------------
function bindControls() {
  const metric = $("metric");
  metric.replaceChildren(...METRICS.map((m) => new Option(`${m.name} — ${m.title}`, m.name)));
  metric.addEventListener("change", () => setMetric(metric.value));
  for (const radio of document.querySelectorAll("input[name=view]")) radio.addEventListener("change", () => setState({ view: radio.value }));
  $("config-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setState({ config: app.form.values() });
    startRun(app.form.values());
  });
  $("config-form").addEventListener("change", () => setState({ config: app.form.values() }));
  $("reset").addEventListener("click", () => {
    app.form.setConfig(null);
    setState({ config: null });
  });
  $("copy-share").addEventListener("click", async () => {
    $("share").select();
    try {
      await navigator.clipboard.writeText(location.href);
      $("copy-share").textContent = "Copied";
    } catch {
      $("copy-share").textContent = "Select + copy";
    }
    setTimeout(() => ($("copy-share").textContent = "Copy link"), 1500);
  });
  window.addEventListener("hashchange", () => {
    app.state = decodeState(location.hash, METRIC_NAMES);
    if (app.state.config) app.form.setConfig(app.state.config);
    setState({});
    refreshList();
  });
}

/** The boundary map, play / pause / step and the guided lessons (boundary.js, controls.js, lesson.js). */
function wireExplorer(presets, lessons) {
  app.boundary = new BoundaryPanel({ div: $("boundary"), note: $("boundary-note") }, api.boundary);
  app.controls = new RunControls($("run-controls"), api, () => {
    redrawAll();
    refreshList();
  });
  app.lesson = new LessonPanel(
    { list: $("lessons"), card: $("lesson-card") },
    {
      lessons,
      presets: new Map(presets.map((p) => [p.id, p])),
      summaries: async () => {
        const r = await api.runs();
        return Array.isArray(r) ? r : (r.runs ?? []);
      },
      start: (config) => api.createRun(config),
      apply: (patch) => {
        setState(patch);
        refreshList();
      },
    },
  );
}

/** The analysis views: diagnosis, theory over the profile, spectrum, phase diagram. */
function wireAnalysis(schema) {
  const fetchers = { diagnosis: api.diagnosis, theory: api.runTheory, spectrum: api.spectrum };
  app.analysis = new AnalysisCache(fetchers, (kind) => {
    redrawAll();
    if (kind === "diagnosis") app.diagnosis.decorate($("run-rows"), app.summaries);
  });
  app.diagnosis = new DiagnosisPanel($("diagnosis"), app.analysis);
  app.spectrum = new SpectrumPanel({ div: $("spectrum"), note: $("spectrum-note") }, app.analysis);
  app.profile.overlay = profileOverlay(app.analysis, $("profile-theory"));
  const activations = schema.$defs?.ModelConfig?.properties?.activation?.enum ?? ["tanh", "relu"];
  app.phase = new PhasePanel(
    { form: $("phase-form"), div: $("phase"), note: $("phase-note") },
    { scan: api.scan, start: startRun, base: () => app.form.values(), activations },
  );
}

async function main() {
  const [schema, presets, health] = await Promise.all([api.schema(), api.presets(), api.health().catch(() => null)]);
  if (health?.version) $("version").textContent = `v${health.version}`;
  app.form = new ConfigForm($("fields"), $("form-error"), schema);
  if (app.state.config) app.form.setConfig(app.state.config);
  for (const p of presets) app.presetTitles.set(canonical(p.config), p.title);
  renderPresets($("presets"), presets, (p) => {
    app.form.setConfig(p.config);
    setState({ config: p.config });
    startRun(p.config);
  });
  app.heatmap = new HeatmapPanel($("heatmaps"));
  app.curves = new CurvesPanel($("curves"));
  app.profile = new ProfilePanel(
    { div: $("profile"), slider: $("step"), output: $("step-value"), latest: $("step-latest"), note: $("profile-hidden") },
    (step) => setState({ step }),
  );
  app.histogram = new HistogramPanel({ div: $("histogram"), layerSelect: $("hist-layer"), kindSelect: $("hist-kind") }, (patch) => setState(patch));
  app.runList = new RunList($("run-rows"), { onToggle: toggleRun, onCancel: cancelRun, onDelete: deleteRun }, summaryLabel);
  renderGuide($("guide"));
  wireExplorer(presets, await api.lessons().catch(() => []));
  wireAnalysis(schema);
  bindControls();
  setState({});
  await refreshList();
  setInterval(refreshList, POLL_MS);
  document.body.dataset.ready = "true";
}

main().catch((err) => {
  $("fatal").textContent = `Could not start: ${err.message}`;
  $("fatal").hidden = false;
  throw err;
});
