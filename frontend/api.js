/** The HTTP contract of docs/api.md as small async functions; the only module that talks to the server. */

async function request(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  return { ok: response.ok, status: response.status, data };
}

async function getJSON(path) {
  const r = await request("GET", path);
  if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${describeError(r.data)}`);
  return r.data;
}

/** A readable one-liner for an error body (FastAPI's detail is a string or a list). */
export function describeError(data) {
  const detail = data && data.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((e) => e.msg || JSON.stringify(e)).join("; ");
  return data ? JSON.stringify(data) : "";
}

const runPath = (id) => `/api/runs/${encodeURIComponent(id)}`;

export const api = {
  health: () => getJSON("/api/health"),
  presets: () => getJSON("/api/presets"),
  schema: () => getJSON("/api/schema"),
  runs: () => getJSON("/api/runs"),
  run: (id) => getJSON(runPath(id)),
  /** Resolves to {ok, status, data}: the caller shows 422/429 bodies next to the form. */
  createRun: (config) => request("POST", "/api/runs", config),
  cancel: (id) => request("POST", `${runPath(id)}/cancel`),
  remove: (id) => request("DELETE", runPath(id)),
  series: (id, metric, maxPoints) =>
    getJSON(`${runPath(id)}/series?metric=${encodeURIComponent(metric)}&max_points=${maxPoints}`),
  exportUrl: (id, format) => `${runPath(id)}/export?format=${format}`,
  // The explorer's routes (routes_explorer.py); each resolves to {ok, status, data}.
  boundary: (id, step) => request("GET", `${runPath(id)}/boundary${step >= 0 ? `?step=${step}` : ""}`),
  pause: (id) => request("POST", `${runPath(id)}/pause`),
  resume: (id) => request("POST", `${runPath(id)}/resume`),
  advance: (id, steps) => request("POST", `${runPath(id)}/advance`, { steps }),
  lessons: () => getJSON("/api/lessons"),
  // The analysis routes (routes_analysis.py): theory, spectra, diagnoses, the init scan.
  runTheory: (id) => getJSON(`${runPath(id)}/theory`),
  spectrum: (id) => getJSON(`${runPath(id)}/spectrum`),
  diagnosis: (id) => getJSON(`${runPath(id)}/diagnosis`),
  scan: (body) => request("POST", "/api/scans/init", body),
};

/**
 * Follow a run's event stream. EventSource reconnects by itself with Last-Event-ID, so a dropped
 * connection resumes with no gap; after `end` the stream is closed so it does not reconnect.
 */
export function followRun(id, { onRecords, onStatus, onEnd }) {
  const source = new EventSource(`${runPath(id)}/events`);
  source.addEventListener("records", (e) => onRecords(JSON.parse(e.data).records || []));
  source.addEventListener("status", (e) => onStatus(JSON.parse(e.data)));
  source.addEventListener("end", (e) => {
    source.close();
    onEnd(e.data ? JSON.parse(e.data) : null);
  });
  return () => source.close();
}

const sweepPath = (id) => `/api/sweeps/${encodeURIComponent(id)}`;

/** Sweeps (grids of runs): the same shapes as docs/api.md's sweep contract. */
export const sweepApi = {
  presets: () => getJSON("/api/sweep-presets"),
  list: () => getJSON("/api/sweeps"),
  get: (id) => getJSON(sweepPath(id)),
  /** Resolves to {ok, status, data}: 422 names the axis field or value that is wrong. */
  create: (spec) => request("POST", "/api/sweeps", spec),
  cancel: (id) => request("POST", `${sweepPath(id)}/cancel`),
  remove: (id) => request("DELETE", sweepPath(id)),
  /** `cell` events as cells change state, then `end` with the whole sweep; returns a closer. */
  follow(id, { onCell, onEnd }) {
    const source = new EventSource(`${sweepPath(id)}/events`);
    source.addEventListener("cell", (e) => onCell(JSON.parse(e.data)));
    source.addEventListener("end", (e) => {
      source.close();
      onEnd(JSON.parse(e.data));
    });
    return () => source.close();
  },
};
