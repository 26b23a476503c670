/** What A and B differ in: the config fields whose values differ, shown above a comparison. */

/** [{field: "model.activation", a, b}] for every leaf whose value differs, in A's field order. */
export function configDiff(a, b, prefix = "") {
  const out = [];
  const keys = [...new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})])];
  for (const key of keys) {
    const va = a?.[key];
    const vb = b?.[key];
    const field = prefix ? `${prefix}.${key}` : key;
    const nested = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
    if (nested(va) || nested(vb)) out.push(...configDiff(nested(va) ? va : {}, nested(vb) ? vb : {}, field));
    else if (JSON.stringify(va) !== JSON.stringify(vb)) out.push({ field, a: va, b: vb });
  }
  return out;
}

const show = (v) => (v === undefined ? "—" : String(v));

/** Fill `el` for the shown runs: hidden unless two runs are compared (side by side or ratio). */
export function renderConfigDiff(el, shown, state, label) {
  const comparing = shown.length >= 2 && state.view !== "single";
  el.hidden = !comparing;
  if (!comparing) return;
  const [a, b] = shown;
  const diff = configDiff(a.summary.config, b.summary.config);
  const head = Object.assign(document.createElement("strong"), { textContent: `A = ${label(a.id)}, B = ${label(b.id)}: ` });
  if (!diff.length) {
    el.replaceChildren(head, "identical configs, seed included, so identical numbers.");
    return;
  }
  const list = document.createElement("ul");
  for (const d of diff) {
    const item = document.createElement("li");
    item.append(Object.assign(document.createElement("code"), { textContent: d.field }), ` ${show(d.a)} → ${show(d.b)}`);
    item.dataset.field = d.field;
    list.append(item);
  }
  el.replaceChildren(head, `${diff.length === 1 ? "one setting differs" : `${diff.length} settings differ`} (A → B):`, list);
}
