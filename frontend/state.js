/** All UI state in one object that round-trips through the URL hash, so a link reproduces a view. */

export const VIEWS = ["single", "compare", "ratio"];
export const HIST_KINDS = ["act", "act_grad", "preact"];
export const FORM_STATES = ["open", "closed"];

export function defaultState() {
  return {
    runs: [], // selected run ids; the first is the focused run, the second is B of the ratio view
    metric: "grad_norm",
    view: "single",
    layer: 0, // histogram layer index: block1, where vanishing shows first; -1 = the readout
    step: -1, // depth-profile step; -1 = follow the latest step
    hist: "act",
    form: "open", // the run form, or "closed" to give the charts the room
    config: null, // the form's config (nested object), so a link re-creates it
    lesson: null, // the guided lesson shown (lesson.js), and its step (0-based)
    lstep: 0,
  };
}

function toBase64Url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64Url(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(padded + "===".slice((padded.length + 3) % 4));
  return new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
}

/** The hash for a state: short keys, defaults left out, the config as base64url JSON. */
export function encodeState(state) {
  const d = defaultState();
  const p = new URLSearchParams();
  if (state.runs.length) p.set("runs", state.runs.join(","));
  for (const key of ["metric", "view", "layer", "step", "hist", "form", "lesson", "lstep"]) {
    if (state[key] !== d[key]) p.set(key, String(state[key]));
  }
  if (state.config) p.set("config", toBase64Url(JSON.stringify(state.config)));
  return "#" + p.toString();
}

function intOr(value, fallback) {
  const n = Number.parseInt(value ?? "", 10);
  return Number.isFinite(n) ? n : fallback;
}

/** Parse a hash back into a full state; anything malformed falls back to its default. */
export function decodeState(hash, metrics) {
  const s = defaultState();
  const p = new URLSearchParams((hash || "").replace(/^#/, ""));
  s.runs = (p.get("runs") || "").split(",").filter((id) => id.length > 0);
  const metric = p.get("metric");
  if (metric && (!metrics || metrics.includes(metric))) s.metric = metric;
  if (VIEWS.includes(p.get("view"))) s.view = p.get("view");
  if (HIST_KINDS.includes(p.get("hist"))) s.hist = p.get("hist");
  if (FORM_STATES.includes(p.get("form"))) s.form = p.get("form");
  s.layer = intOr(p.get("layer"), s.layer);
  s.step = intOr(p.get("step"), s.step);
  if (/^[A-Za-z0-9_-]{1,64}$/.test(p.get("lesson") ?? "")) s.lesson = p.get("lesson");
  s.lstep = Math.max(0, intOr(p.get("lstep"), 0));
  const config = p.get("config");
  if (config) {
    try {
      const parsed = JSON.parse(fromBase64Url(config));
      if (parsed && typeof parsed === "object") s.config = parsed;
    } catch {
      s.config = null; // a truncated link still opens the rest of the view
    }
  }
  return s;
}
