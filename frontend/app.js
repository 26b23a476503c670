/** Wires the widgets together: one state object, the URL hash, the runs store and the redraw loop. */

import { api, describeError } from "./api.js";
import { FrameScheduler } from "./charts.js";
import { renderConfigDiff } from "./configdiff.js";
import { CurvesPanel } from "./curves.js";
import { ConfigForm } from "./form.js";
import { renderGuide, renderMetricNote } from "./help.js";
import { HeatmapPanel } from "./heatmap.js";
import { HistogramPanel } from "./histogram.js";
import { METRICS, METRIC_NAMES } from "./metrics.js";
import { renderPresets } from "./presets.js";
import { ProfilePanel } from "./profile.js";
import { RunList, runLabel, uniqueNames } from "./runlist.js";
import { Runs } from "./runs.js";
import { decodeState, encodeState } from "./state.js";
import { renderStatus } from "./status.js";
import { Toast } from "./toast.js";
import { BoundaryPanel } from "./boundary.js";
import { RunControls } from "./controls.js";
import { LessonPanel } from "./lesson.js";
import { SweepView } from "./sweep.js";
import { AnalysisCache, DiagnosisPanel, profileOverlay } from "./analysis.js";
import { PhasePanel } from "./phase.js";
import { SpectrumPanel } from "./spectrum.js";

const MAX_SHOWN = 4;

const $ = (id) => document.getElementById(id);
const app = {
  state: decodeState(location.hash, METRIC_NAMES),
  runs: null, // Runs: every known run; data and event streams of the shown ones
  names: new Map(), // id -> unique display name
  presets: [],
  gone: [], // ids a link named that the server no longer has
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

/** The config without its seed: runs that differ only in the seed are the same experiment. */
const unseeded = (config) => canonical({ ...config, training: { ...config?.training, seed: 0 } });

/** A preset's title for a run started from it (any seed: "… · seed 3"), else a name from the config. */
function baseName(summary) {
  const seed = summary.config?.training?.seed ?? 0;
  const preset = app.presets.find((p) => unseeded(p.config) === unseeded(summary.config));
  const name = preset?.title ?? runLabel(summary);
  return seed !== (preset?.config.training.seed ?? 0) ? `${name} · seed ${seed}` : name;
}

const label = (id) => app.names.get(id) ?? id;
const shownRuns = () => app.state.runs.map((id) => app.runs.data(id)).filter(Boolean);

// -- state <-> URL ----------------------------------------------------------------------------
function setState(patch) {
  Object.assign(app.state, patch);
  const hash = encodeState(app.state);
  const url = hash === "#" ? location.pathname : hash; // default state: a clean URL
  if (url !== location.hash && !(url === location.pathname && !location.hash)) history.replaceState(null, "", url);
  $("share").value = location.href;
  syncControls();
  const unknown = app.runs.show(app.state.runs, app.state.metric);
  if (unknown.length) {
    app.gone = [...new Set([...app.gone, ...unknown])];
    return setState({ runs: app.state.runs.filter((id) => !unknown.includes(id)) });
  }
  app.lesson?.sync(app.state);
  redrawAll();
}

function syncControls() {
  $("metric").value = app.state.metric;
  for (const radio of document.querySelectorAll("input[name=view]")) radio.checked = radio.value === app.state.view;
  renderMetricNote($("metric-note"), app.state.metric);
  const open = app.state.form !== "closed";
  $("form-body").hidden = !open;
  $("toggle-form").setAttribute("aria-expanded", String(open));
  $("toggle-form").textContent = open ? "Hide" : "Show";
  $("gone").hidden = app.gone.length === 0;
  $("gone-text").textContent = app.gone.length
    ? `The link names ${app.gone.length === 1 ? "a run" : "runs"} this server no longer has (deleted): ${app.gone.join(", ")}.`
    : "";
}

// -- redraws: at most one per widget per animation frame ---------------------------------------
function redrawAll() {
  // With no run shown, the secondary charts give way to a one-line hint instead of empty axes.
  const empty = shownRuns().length === 0;
  document.body.dataset.empty = String(empty);
  const s = app.scheduler;
  const byId = (run) => label(run.id);
  s.request("heatmap", () => app.heatmap.render(shownRuns(), app.state, byId));
  s.request("status", drawStatus, 200);
  s.request("controls", () => app.controls?.render(shownRuns()), 100);
  s.request("boundary", () => app.boundary?.render(shownRuns()[0], app.state, byId), 250);
  s.request("analysis", () => renderAnalysis(byId), 250);
  if (empty) return; // hidden charts are not drawn: Plotly would size them for a hidden box
  // The heatmap follows every frame; the other charts redraw fully, so a few times a second.
  const ifShown = (draw) => () => shownRuns().length && draw(shownRuns());
  s.request("curves", ifShown((runs) => app.curves.render(runs, byId)), 250);
  s.request("profile", ifShown((runs) => app.profile.render(runs, app.state, byId)), 100);
  s.request("hist", ifShown((runs) => app.histogram.render(runs[0], app.state, byId)), 500);
}

/** The diagnosis above the heatmap and the spectrum, for the first shown run (analysis.js). */
function renderAnalysis(byId) {
  app.diagnosis?.render(shownRuns()[0], byId);
  app.spectrum?.render(shownRuns()[0], byId);
}

/** The run list and the status lines, in one go: both show progress from the same source. */
function drawStatus() {
  app.runList.render(app.state.runs);
  app.diagnosis?.decorate($("run-table"), app.runs.list());
  const els = { list: $("run-status"), banner: $("divergence"), legend: $("legend-note"), csv: $("export-csv"), json: $("export-json") };
  renderStatus(els, shownRuns(), app.state, (id) => app.runs.progress(id), label);
  renderConfigDiff($("config-diff"), shownRuns(), app.state, label);
}

/** Summaries changed: names follow (unique over every known run), then everything redraws. */
function runsChanged() {
  app.names = uniqueNames(app.runs.list(), baseName);
  redrawAll();
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
      if (app.state.form === "closed") setState({ form: "open" });
      return;
    }
    app.form.clearErrors();
    app.runs.add(r.data);
    setState({ runs: [r.data.id, ...app.state.runs.filter((id) => id !== r.data.id)].slice(0, MAX_SHOWN), step: -1 });
    // The heatmap may be far from the button that started the run: bring the charts into view,
    // from their toolbar and status line down.
    const top = $("heatmap-section").getBoundingClientRect().top;
    if (top < 0 || top > window.innerHeight * 0.5) document.querySelector("main").scrollIntoView({ block: "start" });
    app.toast.show(`Started ${label(r.data.id)}. Its heatmap fills in as it trains.`);
  } finally {
    button.disabled = false;
  }
}

function toggleRun(id, shown) {
  const rest = app.state.runs.filter((r) => r !== id);
  setState({ runs: shown ? [...rest, id].slice(-MAX_SHOWN) : rest });
}

async function cancelRun(id) {
  const r = await api.cancel(id);
  if (!r.ok) console.warn(`cancel ${id}: ${r.status} ${describeError(r.data)}`);
  if (!app.runs.streaming(id)) {
    // Not followed: its status would not change here otherwise.
    app.runs.add({ ...app.runs.summary(id), ...(r.ok ? r.data : {}) });
  }
}

async function deleteRun(id) {
  const name = label(id);
  setState({ runs: app.state.runs.filter((x) => x !== id) });
  app.analysis?.forget(id);
  const r = await app.runs.remove(id);
  if (!r.ok && r.status !== 404) console.warn(`delete ${id}: ${r.status} ${describeError(r.data)}`);
  else app.toast.show(`Deleted ${name}.`);
}

function configOf(id) {
  return structuredClone(app.runs.summary(id).config);
}

function editRun(id) {
  app.form.setConfig(configOf(id));
  setState({ config: app.form.values(), form: "open" });
  $("form-section").scrollIntoView({ block: "start" });
  $("fields").querySelector("input, select")?.focus({ preventScroll: true });
  app.toast.show(`The form holds the config of ${label(id)}: change what you like, then press Run.`);
}

/** Run the same config with a seed no run of that config has used yet. */
function reseedRun(id) {
  const config = configOf(id);
  const siblings = app.runs.list().filter((s) => unseeded(s.config) === unseeded(config));
  config.training.seed = Math.max(...siblings.map((s) => s.config.training.seed ?? 0)) + 1;
  startRun(config);
}

function setMetric(metric) {
  setState({ metric });
  app.runs.ensureMetric(metric);
}

/** A heatmap cell was picked: the depth profile goes to its step, the histogram to its layer. */
function pickCell({ step, layer, index }) {
  setState({ step, layer: layer === "readout" ? -1 : index });
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
  $("toggle-form").addEventListener("click", () => setState({ form: app.state.form === "closed" ? "open" : "closed" }));
  $("gone-dismiss").addEventListener("click", () => {
    app.gone = [];
    syncControls();
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
  });
}

/** The boundary map, play / pause / step and the guided lessons (boundary.js, controls.js, lesson.js). */
function wireExplorer(presets, lessons) {
  app.boundary = new BoundaryPanel({ div: $("boundary"), note: $("boundary-note") }, api.boundary);
  // A paused or resumed run reports its new status on its own stream: a redraw is all it takes.
  app.controls = new RunControls($("run-controls"), api, redrawAll);
  app.lesson = new LessonPanel(
    { list: $("lessons"), card: $("lesson-card") },
    {
      lessons,
      presets: new Map(presets.map((p) => [p.id, p])),
      summaries: async () => app.runs.list(), // this page's runs store: every run it knows
      start: async (config) => {
        const r = await api.createRun(config);
        if (r.ok) app.runs.add(r.data);
        return r;
      },
      apply: (patch) => setState(patch),
    },
  );
}

/** The sweep view (sweep.js): a cell opens as the shown run; two picked cells side by side. */
function wireSweeps() {
  const show = async (runs, view) => {
    if (!runs.every((id) => app.runs.has(id))) await app.runs.load(); // cells the page has not seen
    setState({ runs, view, step: -1 });
    document.querySelector("main").scrollIntoView({ block: "start" });
  };
  app.sweeps = new SweepView($("sweeps"), {
    config: () => app.form.values(),
    fields: [...app.form.fields.keys()],
    openRun: (id) => show([id], "single"),
    compare: (a, b) => show([a, b], "compare"),
    changed: () => app.runs.load().catch(() => {}),
    removed: (ids) => {
      for (const id of ids) {
        app.runs.close(id);
        app.runs.summaries.delete(id); // the server deleted them with the sweep
      }
      setState({ runs: app.state.runs.filter((id) => !ids.includes(id)) });
      runsChanged();
    },
  });
  app.sweeps.load().catch((err) => console.warn("no sweeps", err));
}

/** The analysis views: diagnosis, theory over the profile, spectrum, phase diagram. */
function wireAnalysis(schema) {
  const fetchers = { diagnosis: api.diagnosis, theory: api.runTheory, spectrum: api.spectrum };
  app.analysis = new AnalysisCache(fetchers, (kind) => {
    redrawAll();
    if (kind === "diagnosis") app.diagnosis.decorate($("run-table"), app.runs.list());
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
  app.presets = presets;
  app.runs = new Runs(METRIC_NAMES, runsChanged);
  app.form = new ConfigForm($("fields"), $("form-error"), schema);
  if (app.state.config) app.form.setConfig(app.state.config);
  app.toast = new Toast($("toast"));
  renderPresets($("presets"), presets, (p) => {
    app.form.setConfig(p.config);
    setState({ config: p.config, metric: p.metric ?? app.state.metric });
    startRun(p.config);
  });
  app.heatmap = new HeatmapPanel($("heatmaps"), $("heatmap-note"), pickCell);
  app.curves = new CurvesPanel($("curves"));
  app.profile = new ProfilePanel(
    { div: $("profile"), slider: $("step"), output: $("step-value"), latest: $("step-latest"), note: $("profile-hidden") },
    (step) => setState({ step }),
  );
  app.histogram = new HistogramPanel({ div: $("histogram"), layerSelect: $("hist-layer"), kindSelect: $("hist-kind") }, (patch) => setState(patch));
  const handlers = {
    onToggle: toggleRun, onCancel: cancelRun, onDelete: deleteRun, onEdit: editRun,
    onDuplicate: (id) => startRun(configOf(id)), onReseed: reseedRun,
  };
  app.runList = new RunList($("run-table"), handlers, app.runs, (id) => label(id));
  renderGuide($("guide"));
  wireExplorer(presets, await api.lessons().catch(() => []));
  wireSweeps();
  wireAnalysis(schema);
  bindControls();
  await app.runs.load(); // the one list fetch; shown runs then follow their streams
  setState({});
  document.body.dataset.ready = "true";
}

main().catch((err) => {
  $("fatal").textContent = `Could not start: ${err.message}`;
  $("fatal").hidden = false;
  throw err;
});
