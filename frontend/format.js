/** Numbers and layer lists as a reader wants them: 7.94e-5, not 0.0000794000; "block2–block9". */

/**
 * Four significant digits, trailing zeros dropped; exponent notation below 1e-3 and from 1e5 on
 * ("7.94e-5", "1.2e+6"), where fixed notation would hide the magnitude in a row of zeros.
 */
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (!Number.isFinite(value)) return value > 0 ? "∞" : "−∞";
  if (value === 0) return "0";
  const size = Math.abs(value);
  if (size < 1e-3 || size >= 1e5) {
    const [mantissa, exponent] = value.toExponential(3).split("e");
    return `${Number.parseFloat(mantissa)}e${exponent}`;
  }
  return String(Number.parseFloat(value.toPrecision(4)));
}

/** Layers by index, named briefly: runs of neighbours as ranges ("block2–block9"), and past
 *  four ranges, how many layers are left. */
export function nameLayers(layers, indices) {
  const ranges = [];
  for (const l of indices) {
    const last = ranges[ranges.length - 1];
    if (last && last[1] === l - 1) last[1] = l;
    else ranges.push([l, l]);
  }
  const kept = ranges.slice(0, 4);
  const named = kept.map(([a, b]) => (a === b ? layers[a] : `${layers[a]}–${layers[b]}`));
  const shown = kept.reduce((n, [a, b]) => n + b - a + 1, 0);
  if (shown < indices.length) named.push(`${indices.length - shown} more`);
  return named.join(", ");
}
