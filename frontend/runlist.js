/** The run list: status and progress of every run, with show/compare, edit and re-run, cancel, delete and export. */

import { api } from "./api.js";
import { isTerminal } from "./rundata.js";

/** A short human name for a run, from its config. */
export function runLabel(summary) {
  if (summary.title) return summary.title;
  const m = summary.config?.model ?? {};
  const extras = [m.norm && m.norm !== "none" ? m.norm : "", m.residual_every ? `skip/${m.residual_every}` : ""];
  return [`${m.activation ?? "?"} ×${m.depth ?? "?"}`, m.init, ...extras].filter(Boolean).join(" ");
}

/** id -> a name no other run has: the oldest run of a name keeps it, later ones get " #2", " #3". */
export function uniqueNames(summaries, base) {
  const byAge = [...summaries].sort((a, b) => String(a.created_at).localeCompare(String(b.created_at)) || String(a.id).localeCompare(String(b.id)));
  const count = new Map();
  const names = new Map();
  for (const s of byAge) {
    const name = base(s);
    const n = (count.get(name) ?? 0) + 1;
    count.set(name, n);
    names.set(s.id, n === 1 ? name : `${name} #${n}`);
  }
  return names;
}

/** "172/300": the one way progress is written, here and in the status line. */
export function progressText({ done, total }) {
  return `${done}/${total ?? "?"}`;
}

function cell(...children) {
  const td = document.createElement("td");
  td.append(...children);
  return td;
}

function button(text, label, onClick, className = "") {
  const b = Object.assign(document.createElement("button"), { type: "button", textContent: text, className });
  b.setAttribute("aria-label", label);
  b.dataset.focusKey = `${className || text}-${label}`;
  b.addEventListener("click", onClick);
  return b;
}

export class RunList {
  /** handlers: {onToggle(id, shown), onCancel, onDelete, onEdit, onDuplicate, onReseed (each
   *  takes the id)}; `runs` is the Runs store (progress, streaming), `label(id)` names a run. */
  constructor(table, handlers, runs, label) {
    this.table = table;
    this.handlers = handlers;
    this.runs = runs;
    this.label = label;
    this.confirming = null; // the run whose Delete waits for a second, confirming click
  }

  /**
   * Rows are rebuilt only when what they show changes (runs, statuses, names, ticks); otherwise
   * the progress counts are updated in place, so a click is never lost to a rebuild under it.
   */
  render(selected) {
    this.selected = selected;
    const list = this.runs.list();
    const key = JSON.stringify([selected, this.confirming, list.map((s) => [s.id, s.status, this.label(s.id), this.runs.streaming(s.id)])]);
    if (key === this.key) {
      for (const body of this.table.querySelectorAll("tbody[data-run]")) {
        body.querySelector(".progress").textContent = this.progressLine(this.runs.summary(body.dataset.run));
      }
      return;
    }
    this.key = key;
    const groups = list.map((s) => this.group(s, selected.indexOf(s.id)));
    if (!groups.length) {
      const td = Object.assign(document.createElement("td"), { colSpan: 2, textContent: "No runs yet." });
      const body = document.createElement("tbody");
      body.append(document.createElement("tr"));
      body.firstChild.append(td);
      groups.push(body);
    }
    // Keep keyboard focus on the same control across re-renders of the list.
    const focused = document.activeElement?.dataset?.focusKey;
    for (const old of this.table.querySelectorAll("tbody")) old.remove();
    this.table.append(...groups);
    if (focused) this.table.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
  }

  /** One row group per run: its name and status, then a row of its actions. */
  group(s, position) {
    const body = document.createElement("tbody");
    body.dataset.run = s.id;
    body.dataset.status = s.status;
    const name = this.label(s.id);
    const box = Object.assign(document.createElement("input"), { type: "checkbox", checked: position >= 0, id: `show-${s.id}` });
    box.dataset.focusKey = `show-${s.id}`;
    box.addEventListener("change", () => this.handlers.onToggle(s.id, box.checked));
    const labelEl = Object.assign(document.createElement("label"), { htmlFor: box.id, textContent: name });
    labelEl.title = `run ${s.id}`;
    const tag = position >= 0 ? Object.assign(document.createElement("span"), { className: "tag", textContent: "AB".charAt(position) || `#${position + 1}` }) : "";
    const status = Object.assign(document.createElement("span"), { className: `status ${s.status}`, textContent: s.status });
    const progress = Object.assign(document.createElement("small"), { className: "progress", textContent: this.progressLine(s) });
    if (!isTerminal(s) && !this.runs.streaming(s.id)) progress.title = "as last seen: tick the run to follow it live";
    const main = document.createElement("tr");
    main.append(cell(box, " ", labelEl, " ", tag), cell(status, progress));
    const actions = document.createElement("tr");
    actions.className = "actions-row";
    const td = cell(...(this.confirming === s.id ? this.confirmControls(s.id, name) : this.controls(s, name)));
    td.colSpan = 2;
    td.className = "actions";
    actions.append(td);
    body.append(main, actions);
    return body;
  }

  progressLine(s) {
    const stale = !isTerminal(s) && !this.runs.streaming(s.id);
    return ` ${progressText(this.runs.progress(s.id))}${stale ? " (last seen)" : ""}`;
  }

  controls(s, name) {
    const h = this.handlers;
    const out = [
      button("Edit", `load the config of ${name} into the form`, () => h.onEdit(s.id), "edit"),
      button("Duplicate", `run ${name} again with the same config`, () => h.onDuplicate(s.id), "duplicate"),
      button("New seed", `run ${name} again with a new seed`, () => h.onReseed(s.id), "reseed"),
    ];
    if (!isTerminal(s)) out.push(button("Cancel", `cancel run ${name}`, () => h.onCancel(s.id), "cancel"));
    out.push(button("Delete", `delete run ${name}`, () => this.confirm(s.id), "delete"));
    for (const format of ["csv", "json"]) {
      out.push(Object.assign(document.createElement("a"), { href: api.exportUrl(s.id, format), textContent: format.toUpperCase(), download: "" }));
    }
    return out;
  }

  confirmControls(id, name) {
    const question = Object.assign(document.createElement("span"), { className: "confirm", textContent: `Delete ${name} and its records?` });
    const yes = button("Delete", `yes, delete run ${name}`, () => {
      this.confirming = null;
      this.handlers.onDelete(id);
    }, "confirm-delete");
    const no = button("Keep", `keep run ${name}`, () => {
      this.confirming = null;
      this.key = null;
      this.render(this.selected);
    }, "keep");
    return [question, yes, no];
  }

  /** Delete asks first: the row offers Delete or Keep, and the safe answer has the focus. */
  confirm(id) {
    this.confirming = id;
    this.key = null;
    this.render(this.selected);
    this.table.querySelector(`tbody[data-run="${CSS.escape(id)}"] button.keep`)?.focus();
  }
}
