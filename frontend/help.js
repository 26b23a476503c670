/** The metric guide: what each statistic measures and what to look for, shown next to the charts. */

import { METRICS, metricInfo } from "./metrics.js";

export function renderGuide(container) {
  // On a narrow screen the guide sits between the charts and the presets: folded until asked for.
  if (window.matchMedia("(max-width: 900px)").matches) container.open = false;
  const list = document.createElement("dl");
  for (const m of METRICS) {
    list.append(
      Object.assign(document.createElement("dt"), { textContent: `${m.name}: ${m.title}` }),
      Object.assign(document.createElement("dd"), { textContent: m.about }),
    );
  }
  container.append(list);
}

export function renderMetricNote(el, metric) {
  el.textContent = metricInfo(metric).about;
}
