/** The run list: status and progress of every run, with show/compare, cancel, delete and export. */

import { api } from "./api.js";
import { isTerminal } from "./rundata.js";

/** A short human name for a run, from its preset title or its config. */
export function runLabel(summary) {
  if (summary.title) return summary.title;
  const m = summary.config?.model ?? {};
  const extras = [m.norm && m.norm !== "none" ? m.norm : "", m.residual_every ? `skip/${m.residual_every}` : ""];
  return [`${m.activation ?? "?"} ×${m.depth ?? "?"}`, m.init, ...extras].filter(Boolean).join(" ");
}

function cell(...children) {
  const td = document.createElement("td");
  td.append(...children);
  return td;
}

function button(text, label, onClick) {
  const b = Object.assign(document.createElement("button"), { type: "button", textContent: text });
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

export class RunList {
  /** handlers: {onToggle(id, shown), onCancel(id), onDelete(id)}; label(summary) names a run. */
  constructor(tbody, handlers, label = runLabel) {
    this.tbody = tbody;
    this.handlers = handlers;
    this.label = label;
  }

  render(summaries, selected) {
    const rows = summaries.map((s) => this.row(s, selected.indexOf(s.id)));
    if (!rows.length) {
      const td = Object.assign(document.createElement("td"), { colSpan: 3, textContent: "No runs yet." });
      const tr = document.createElement("tr");
      tr.append(td);
      rows.push(tr);
    }
    // Keep keyboard focus on the same control across re-renders of the list.
    const focused = document.activeElement?.dataset?.focusKey;
    this.tbody.replaceChildren(...rows);
    if (focused) this.tbody.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
  }

  row(s, position) {
    const tr = document.createElement("tr");
    tr.dataset.run = s.id;
    tr.dataset.status = s.status;
    const box = Object.assign(document.createElement("input"), { type: "checkbox", checked: position >= 0, id: `show-${s.id}` });
    box.dataset.focusKey = `show-${s.id}`;
    box.addEventListener("change", () => this.handlers.onToggle(s.id, box.checked));
    const name = Object.assign(document.createElement("label"), { htmlFor: box.id, textContent: this.label(s) });
    name.title = `run ${s.id}`;
    const tag = position >= 0 ? Object.assign(document.createElement("span"), { className: "tag", textContent: "AB".charAt(position) || `#${position + 1}` }) : "";
    const status = Object.assign(document.createElement("span"), { className: `status ${s.status}`, textContent: s.status });
    const steps = s.config?.training?.steps;
    const progress = Object.assign(document.createElement("small"), { textContent: ` ${s.steps_done ?? 0}/${steps ?? "?"}` });
    const actions = document.createElement("td");
    actions.className = "actions";
    if (!isTerminal(s)) {
      const cancel = button("Cancel", `cancel run ${this.label(s)}`, () => this.handlers.onCancel(s.id));
      cancel.dataset.focusKey = `cancel-${s.id}`;
      cancel.className = "cancel";
      actions.append(cancel);
    }
    const del = button("Delete", `delete run ${this.label(s)}`, () => this.handlers.onDelete(s.id));
    del.className = "delete";
    del.dataset.focusKey = `delete-${s.id}`;
    const csv = Object.assign(document.createElement("a"), { href: api.exportUrl(s.id, "csv"), textContent: "CSV", download: "" });
    const json = Object.assign(document.createElement("a"), { href: api.exportUrl(s.id, "json"), textContent: "JSON", download: "" });
    actions.append(del, csv, json);
    tr.append(cell(box, " ", name, " ", tag), cell(status, progress), actions);
    return tr;
  }
}
