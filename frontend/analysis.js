/** The why behind the picture: a run's diagnosis above the heatmap (and in the run list's
 *  tooltips), and its mean-field prediction drawn over the depth profile at step 0. */

import { isTerminal } from "./rundata.js";

const REFRESH_MS = 3000; // a live run's diagnosis and spectrum are fetched again at most this often
const TOOLTIP_RUNS = 20; // finished runs whose diagnosis the run list fetches for its tooltips

/**
 * One fetch per (kind, run) at a time, kept until the run changes: a finished run's answer
 * is final; a live run's is refreshed at most every REFRESH_MS.
 */
export class AnalysisCache {
  constructor(fetchers, onUpdate) {
    this.fetchers = fetchers; // kind -> async (id) => data
    this.onUpdate = onUpdate;
    this.entries = new Map(); // `${kind}:${id}` -> {data, at, final, pending}
  }

  /** The latest answer (or null), fetching again when it is stale. */
  get(kind, summary) {
    const key = `${kind}:${summary.id}`;
    const entry = this.entries.get(key) ?? { data: null, at: 0, final: false, pending: false };
    this.entries.set(key, entry);
    const stale = !entry.final && Date.now() - entry.at > REFRESH_MS;
    if (stale && !entry.pending && (summary.records ?? 1) > 0) {
      entry.pending = true;
      const final = kind === "theory" || isTerminal(summary); // a prediction never changes
      this.fetchers[kind](summary.id)
        .then((data) => Object.assign(entry, { data, final, error: null }))
        .catch((err) => Object.assign(entry, { error: String(err.message ?? err), final }))
        .finally(() => {
          entry.at = Date.now();
          entry.pending = false;
          this.onUpdate(kind, summary.id);
        });
    }
    return entry.data;
  }

  forget(id) {
    for (const key of [...this.entries.keys()]) if (key.endsWith(`:${id}`)) this.entries.delete(key);
  }
}

function element(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

/** The findings as a list: severity and kind, the message with its numbers, the fixes. One
 *  cause often shows as several findings (vanishing gradients, no learning, tiny updates) with
 *  the same fixes: each fix is listed once, under the first finding that calls for it. */
export function findingItems(findings) {
  const listed = new Set();
  return findings.map((f) => {
    const head = element("strong", { className: "kind", textContent: `${f.severity} · ${f.kind.replaceAll("_", " ")}` });
    const item = element("li", { className: `finding ${f.severity}` }, head, ": ", f.message);
    item.dataset.kind = f.kind;
    const fresh = f.suggestions.filter((s) => !listed.has(s));
    fresh.forEach((s) => listed.add(s));
    if (fresh.length) {
      item.append(element("ul", { className: "fixes" }, ...fresh.map((s) => element("li", { textContent: s }))));
    }
    if (fresh.length < f.suggestions.length) {
      const text = fresh.length ? "…and the fixes listed above." : "Fixes: those listed above.";
      item.append(element("p", { className: "fixes-above", textContent: text }));
    }
    return item;
  });
}

export class DiagnosisPanel {
  constructor(section, cache) {
    this.section = section;
    this.cache = cache;
  }

  /** The first shown run's findings; hidden while there is none to show. */
  render(run, label) {
    const findings = run ? this.cache.get("diagnosis", run.summary)?.findings : null;
    this.section.hidden = !findings;
    if (!findings) return;
    this.section.dataset.run = run.id;
    this.section.dataset.findings = String(findings.length);
    const title = element("h2", { textContent: `Diagnosis: ${label(run)}` });
    const body = findings.length
      ? element("ul", { className: "findings" }, ...findingItems(findings))
      : element("p", { className: "note", textContent: isTerminal(run.summary) ? "No finding: nothing crossed a threshold (see docs/theory.md)." : "No finding so far." });
    this.section.replaceChildren(title, body);
  }

  /** Each finished run's findings in its status badge's tooltip (the first few runs). */
  decorate(table, summaries) {
    for (const s of summaries.filter(isTerminal).slice(0, TOOLTIP_RUNS)) {
      const findings = this.cache.get("diagnosis", s)?.findings;
      const badge = table.querySelector(`[data-run="${CSS.escape(s.id)}"] .status`);
      if (!badge || !findings) continue;
      badge.title = findings.length ? findings.map((f) => `${f.severity}: ${f.message}`).join("\n") : "no finding";
      badge.dataset.findings = String(findings.length);
    }
  }
}

/** Plotly traces of the theory over the profile: the mean-field line and its finite-width band,
 *  for act_std as predicted, for act_grad_norm anchored at the last block's measured value. */
export function theoryTraces(theory, measuredLast, metric) {
  const p = theory?.predicted;
  if (!p) return [];
  const x = p.act_std.map((_, l) => l);
  let line, lo, hi;
  if (metric === "act_std") [line, lo, hi] = [p.act_std, p.act_std_lo, p.act_std_hi];
  else if (metric === "act_grad_norm" && measuredLast > 0) {
    const scale = (values) => values.map((v) => (v === null ? null : measuredLast * Math.exp(v)));
    [line, lo, hi] = [scale(p.log_act_grad_norm), scale(p.log_act_grad_norm_lo), scale(p.log_act_grad_norm_hi)];
  } else return [];
  const band = { type: "scatter", mode: "lines", x, line: { width: 0 }, hoverinfo: "skip", showlegend: false };
  return [
    { ...band, y: lo, name: "theory band low" },
    { ...band, y: hi, fill: "tonexty", fillcolor: "rgba(120,120,120,0.18)", name: "finite-width band (2σ)", showlegend: true, hoverinfo: "skip" },
    {
      type: "scatter", mode: "lines", x, y: line, name: "mean-field theory",
      line: { color: "#333", dash: "dash", width: 2 },
      hovertemplate: `theory: %{y:.4g}<extra>mean field</extra>`,
    },
  ];
}

/** The profile's overlay hook: theory for the first shown run, when it is drawn at step 0. */
export function profileOverlay(cache, note) {
  return (runs, state) => {
    const run = runs[0];
    note.hidden = true;
    if (!run || !["act_std", "act_grad_norm"].includes(state.metric)) return [];
    const cols = run.metrics[state.metric];
    const at = cols.indexAt(state.step);
    if (at < 0) return [];
    const theory = cache.get("theory", run.summary);
    if (!theory) return [];
    if (!theory.applicable) {
      note.textContent = `No mean-field prediction for this run: ${theory.reason}.`;
      note.hidden = false;
      return [];
    }
    if (cols.steps[at] !== 0) {
      note.textContent = "The mean-field prediction is for step 0: drag the step slider to 0 to see it.";
      note.hidden = false;
      return [];
    }
    const depth = theory.predicted.act_std.length;
    return theoryTraces(theory, cols.cols[at][depth - 1], state.metric);
  };
}
