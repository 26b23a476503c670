/** The per-layer metrics, as the server's registry describes them (GET /api/metrics): how each is coloured and what it tells you. */

// The registry's scale says what a number is: "log" (positive, spans decades), "linear"
// (signed) or "fraction" (in [0, 1]). `scale` here is how a heatmap colours it: "log" = log10 of
// the value; "logabs" = log10 of |value| for signed numbers, whose size spans decades as a net
// diverges (the sign is dropped and the title says so); "linear" = fractions as they are, where
// log10 would hide the interesting zeros.
const COLOURING = { log: "log", linear: "logabs", fraction: "linear" };
const NOTE = { log: "", logabs: " (log10 of |value|, sign dropped)", linear: " (linear 0–1)" };

async function fetchMetrics() {
  const response = await fetch("/api/metrics", { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`GET /api/metrics: ${response.status}`);
  return (await response.json()).map((m) => {
    const scale = COLOURING[m.scale] ?? "log";
    return { name: m.name, title: `${m.title}${NOTE[scale]}`, scale, kind: m.scale, about: m.description };
  });
}

export const METRICS = await fetchMetrics();
export const METRIC_NAMES = METRICS.map((m) => m.name);
export const metricInfo = (name) => METRICS.find((m) => m.name === name) ?? METRICS[0];

/** Colour value of a raw number: log10 (or log10|x|) or the fraction itself; null stays null. */
export function transformFor(name) {
  const scale = metricInfo(name).scale;
  if (scale === "linear") return (v) => (v === null || v === undefined ? null : v);
  if (scale === "logabs") return (v) => (v ? Math.log10(Math.abs(v)) : null);
  return (v) => (v > 0 ? Math.log10(v) : null); // zero and null have no logarithm: left blank
}

export function colourLabel(name) {
  const scale = metricInfo(name).scale;
  if (scale === "linear") return name;
  return scale === "logabs" ? `log10 |${name}|` : `log10 ${name}`;
}
