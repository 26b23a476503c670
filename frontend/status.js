/** The status lines above the heatmap: each shown run's state and progress, the server's divergence message, the legend. */

import { api } from "./api.js";
import { colourLabel } from "./metrics.js";
import { progressText } from "./runlist.js";

const li = (text, bad) => Object.assign(document.createElement("li"), { textContent: text, className: bad ? "bad" : "" });

/**
 * `els`: {list, banner, legend, csv, json}. `shown` are the shown RunData, `progress(id)` the one
 * source of progress (the run list uses it too), `label(id)` a run's name.
 */
export function renderStatus(els, shown, state, progress, label) {
  els.list.replaceChildren(
    ...shown.map((run) => {
      const d = run.divergenceText();
      return li(`${label(run.id)}: ${run.status}, ${progressText(progress(run.id))} steps${d ? ` — ${d}` : ""}`, Boolean(d));
    }),
  );
  const alerts = shown.filter((r) => r.divergenceText()).map((r) => `${label(r.id)}: ${r.divergenceText()}`);
  els.banner.textContent = alerts.join("\n");
  els.banner.hidden = alerts.length === 0;
  const ratio = state.view === "ratio" && shown.length >= 2;
  const scale = colourLabel(state.metric);
  els.legend.textContent = ratio
    ? `Colour: ${scale} of B minus that of A (orange: B larger, blue: A larger, white: equal).`
    : `Colour: ${scale} (Viridis${state.view === "compare" ? ", one scale for all runs" : ""}).`;
  const focus = shown[0];
  for (const format of ["csv", "json"]) {
    const link = els[format];
    link.hidden = !focus;
    if (focus) link.href = api.exportUrl(focus.id, format);
  }
}
