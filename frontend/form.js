/**
 * The run form, generated from /api/schema so its choices and bounds always match the server's.
 * Defaults can depend on the dataset (the schema's "x-dataset-defaults", e.g. a smaller learning
 * rate for regression): choosing a dataset moves each such field to that dataset's default, unless
 * the user changed the field.
 */

/** Follow a local "$ref" (also inside allOf, as older pydantic versions emit). */
function resolve(schema, node) {
  const ref = node.$ref ?? node.allOf?.find((n) => n.$ref)?.$ref;
  if (!ref) return node;
  return ref.replace(/^#\//, "").split("/").reduce((obj, key) => obj[key], schema);
}

const fieldId = (path) => `f-${path.join("-")}`;
const errorId = (path) => `e-${path.join("-")}`;
const humanize = (key) => key.replace(/_/g, " ");

function makeInput(path, prop) {
  let input;
  if (Array.isArray(prop.enum)) {
    input = document.createElement("select");
    for (const choice of prop.enum) input.append(new Option(String(choice), String(choice)));
    input.dataset.kind = "enum";
  } else if (prop.type === "boolean") {
    input = Object.assign(document.createElement("input"), { type: "checkbox" });
    input.dataset.kind = "boolean";
  } else {
    input = Object.assign(document.createElement("input"), { type: "number", inputMode: "decimal" });
    input.dataset.kind = prop.type === "integer" ? "integer" : "number";
    const low = prop.minimum ?? prop.exclusiveMinimum;
    if (low !== undefined) input.min = String(low);
    if (prop.maximum !== undefined) input.max = String(prop.maximum);
    input.step = prop.type === "integer" ? "1" : "any";
  }
  input.id = fieldId(path);
  input.name = path.join(".");
  input.setAttribute("aria-describedby", `${errorId(path)} ${fieldId(path)}-help`);
  return input;
}

function bounds(prop) {
  const parts = [];
  if (prop.minimum !== undefined) parts.push(`≥ ${prop.minimum}`);
  if (prop.exclusiveMinimum !== undefined) parts.push(`> ${prop.exclusiveMinimum}`);
  if (prop.maximum !== undefined) parts.push(`≤ ${prop.maximum}`);
  return parts.join(", ");
}

export class ConfigForm {
  /** `container` receives the fieldsets; `topError` shows errors not tied to one field. */
  constructor(container, topError, schema) {
    this.el = container;
    this.topError = topError;
    this.fields = new Map(); // "model.depth" -> {input, prop, error}
    this.taskDefaults = schema["x-dataset-defaults"] ?? {}; // dataset -> {"training.lr": 0.002}
    this.build(schema);
    this.dataset = this.fields.get("data.dataset")?.input;
    this.shownTask = this.dataset?.value;
    this.dataset?.addEventListener("change", () => this.followTask());
    this.applyTaskDefaults(null);
  }

  /** The default of field `name` for `dataset`: the dataset's own, else the schema's. */
  defaultFor(name, dataset) {
    return this.taskDefaults[dataset]?.[name] ?? this.fields.get(name)?.prop.default;
  }

  /** Fields still at the old dataset's default move to the new one's. */
  followTask() {
    const before = this.shownTask;
    this.shownTask = this.dataset.value;
    this.applyTaskDefaults(before);
  }

  applyTaskDefaults(before) {
    const names = new Set([...Object.keys(this.taskDefaults[before] ?? {}), ...Object.keys(this.taskDefaults[this.shownTask] ?? {})]);
    for (const name of names) {
      const field = this.fields.get(name);
      if (!field) continue;
      const untouched = before === null || this.same(field, this.defaultFor(name, before));
      if (untouched) this.setValue(name, this.defaultFor(name, this.shownTask));
    }
  }

  same(field, value) {
    const kind = field.input.dataset.kind;
    if (kind === "boolean") return field.input.checked === Boolean(value);
    if (kind === "integer" || kind === "number") return Number(field.input.value) === Number(value);
    return field.input.value === String(value);
  }

  build(schema) {
    const sections = Object.entries(schema.properties ?? {});
    for (const [section, node] of sections) {
      const def = resolve(schema, node);
      const fieldset = document.createElement("fieldset");
      fieldset.append(Object.assign(document.createElement("legend"), { textContent: section }));
      for (const [key, raw] of Object.entries(def.properties ?? {})) {
        const prop = resolve(schema, raw);
        fieldset.append(this.row([section, key], prop));
      }
      this.el.append(fieldset);
    }
  }

  row(path, prop) {
    const wrap = document.createElement("div");
    wrap.className = "field";
    const input = makeInput(path, prop);
    const labelEl = Object.assign(document.createElement("label"), { htmlFor: input.id, textContent: humanize(path[1]) });
    const help = Object.assign(document.createElement("small"), { id: `${input.id}-help`, className: "help" });
    const name = path.join(".");
    const perTask = Object.entries(this.taskDefaults).filter(([, d]) => name in d).map(([task, d]) => `${d[name]} for ${task}`);
    const defaults = perTask.length ? `default ${prop.default}; ${perTask.join(", ")}` : "";
    help.textContent = [prop.description, bounds(prop), defaults].filter(Boolean).join(" · ");
    const error = Object.assign(document.createElement("p"), { id: errorId(path), className: "error" });
    error.setAttribute("aria-live", "polite");
    wrap.append(labelEl, input, help, error);
    this.fields.set(path.join("."), { input, prop, error });
    this.setValue(path.join("."), prop.default);
    return wrap;
  }

  setValue(name, value) {
    const field = this.fields.get(name);
    if (!field || value === undefined) return;
    if (field.input.dataset.kind === "boolean") field.input.checked = Boolean(value);
    else field.input.value = String(value);
  }

  /** Fill from a (possibly partial) nested config; fields it does not mention take their defaults. */
  setConfig(config) {
    const dataset = config?.data?.dataset ?? this.fields.get("data.dataset")?.prop.default;
    for (const name of this.fields.keys()) {
      const [section, key] = name.split(".");
      const value = config?.[section]?.[key];
      this.setValue(name, value === undefined ? this.defaultFor(name, dataset) : value);
    }
    this.shownTask = this.dataset?.value;
    this.clearErrors();
  }

  /** The nested config. Text that is not a number is sent as is, so the server names the problem. */
  values() {
    const config = {};
    for (const [name, { input }] of this.fields) {
      const [section, key] = name.split(".");
      config[section] ??= {};
      const kind = input.dataset.kind;
      if (kind === "boolean") config[section][key] = input.checked;
      else if (kind === "enum") config[section][key] = input.value;
      else if (input.value.trim() === "") continue; // blank: the server's default applies
      else {
        const n = Number(input.value);
        config[section][key] = Number.isFinite(n) ? n : input.value;
      }
    }
    return config;
  }

  clearErrors() {
    this.topError.textContent = "";
    this.topError.hidden = true;
    for (const { input, error } of this.fields.values()) {
      error.textContent = "";
      input.removeAttribute("aria-invalid");
    }
  }

  markField(name, message) {
    const field = this.fields.get(name);
    if (!field) return false;
    field.input.setAttribute("aria-invalid", "true");
    if (message) field.error.textContent = message;
    return true;
  }

  /**
   * Show a 422 body: an error whose loc names a field goes under it; a cross-field error (loc is
   * just the body) goes to the top and highlights every field its message names.
   */
  showErrors(data, status) {
    this.clearErrors();
    const detail = data?.detail;
    const top = [];
    if (Array.isArray(detail)) {
      for (const e of detail) {
        const loc = (e.loc ?? []).filter((p) => p !== "body");
        const msg = (e.msg ?? "invalid").replace(/^Value error, /, "");
        if (!this.markField(loc.slice(0, 2).join("."), msg)) top.push(msg);
      }
    } else top.push(typeof detail === "string" ? detail : `request failed (${status})`);
    for (const msg of top) {
      for (const m of msg.matchAll(/\b(model|training|data|recording)\.(\w+)/g)) this.markField(`${m[1]}.${m[2]}`, "");
    }
    if (top.length) {
      this.topError.textContent = top.join("\n");
      this.topError.hidden = false;
    }
    const first = this.el.querySelector("[aria-invalid=true]") ?? this.topError;
    if (first && first.focus) first.focus();
  }
}
