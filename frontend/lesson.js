/** Guided lessons from /api/lessons: each step opens its presets' runs in its view and metric. */

// Runs in these states are not reused for a lesson: they show no story, or only part of one.
const NOT_REUSED = new Set(["failed", "cancelled", "interrupted"]);

/** Same keys in the same order, so equal configs give equal strings. */
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * The run to show for a preset: the one the link names when it has the preset's config, else the
 * newest reusable run with that config (summaries come newest first), else null (start one).
 */
export function reusableRun(config, summaries, linked) {
  const want = canonical(config);
  const fits = (s) => s && canonical(s.config) === want && !NOT_REUSED.has(s.status);
  const named = summaries.find((s) => s.id === linked);
  if (fits(named)) return named.id;
  return summaries.find(fits)?.id ?? null;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

export class LessonPanel {
  /**
   * els: {list, card}. deps: {lessons, presets (id -> preset), summaries() -> Promise of the run
   * summaries (newest first), start(config) -> {ok, status, data}, apply(patch)}: apply sets the
   * UI state (runs, view,
   * metric, lesson, lstep), which puts the step in the URL hash.
   */
  constructor(els, deps) {
    this.list = els.list;
    this.card = els.card;
    this.deps = deps;
    this.lessons = new Map(deps.lessons.map((l) => [l.id, l]));
    this.shown = null; // `${lesson}:${step}` on the card
    this.opening = 0; // the latest open(); an older one that finishes later changes nothing
    this.list.replaceChildren(
      ...deps.lessons.map((lesson) => {
        const b = el("button", { type: "button", className: "lesson-start", title: lesson.description }, el("strong", { textContent: lesson.title }), el("span", { textContent: lesson.description }));
        b.dataset.lesson = lesson.id;
        b.addEventListener("click", () => this.open(lesson.id, 0, []));
        return b;
      }),
    );
  }

  /** Open step `index` of a lesson: find or start its runs, then show it. `linked` are the run ids
   *  a shared link names, reused when they still hold the step's presets. */
  async open(id, index, linked) {
    const lesson = this.lessons.get(id);
    if (!lesson) return this.close();
    const i = Math.min(Math.max(0, index), lesson.steps.length - 1);
    const step = lesson.steps[i];
    const token = ++this.opening;
    this.showCard(lesson, i, "Opening the runs…");
    const runs = [];
    try {
      const summaries = await this.deps.summaries(); // fresh: a run started a moment ago counts
      for (const [n, presetId] of step.runs.entries()) {
        const preset = this.deps.presets.get(presetId);
        let runId = reusableRun(preset.config, summaries, linked[n]);
        if (!runId) {
          const r = await this.deps.start(preset.config);
          if (!r.ok) throw new Error(`could not start "${preset.title}": ${r.data?.detail ?? r.status}`);
          runId = r.data.id;
          summaries.unshift({ ...r.data, config: preset.config }); // a later step of this one reuses it
        }
        runs.push(runId);
      }
    } catch (err) {
      if (token === this.opening) this.showCard(lesson, i, String(err.message ?? err));
      return;
    }
    if (token !== this.opening) return;
    this.showCard(lesson, i);
    this.deps.apply({ runs, view: step.view, metric: step.metric, lesson: id, lstep: i, step: -1 });
  }

  /** Show what the state names (a link or the back button); opens the step when it changed. */
  sync(state) {
    if (!state.lesson) {
      if (this.shown) this.close(false);
      return;
    }
    if (this.shown !== `${state.lesson}:${state.lstep}`) this.open(state.lesson, state.lstep, state.runs);
  }

  close(apply = true) {
    this.shown = null;
    this.card.hidden = true;
    this.card.replaceChildren();
    if (apply) this.deps.apply({ lesson: null, lstep: 0 });
  }

  showCard(lesson, i, message = "") {
    const step = lesson.steps[i];
    this.shown = `${lesson.id}:${i}`;
    const title = (id) => this.deps.presets.get(id)?.title ?? id;
    const runs = step.runs.map((id, n) => `${step.runs.length > 1 ? `${"AB".charAt(n) || n + 1}: ` : ""}${title(id)}`);
    const prev = el("button", { type: "button", className: "lesson-prev", textContent: "← Previous", disabled: i === 0 });
    const next = el("button", { type: "button", className: "lesson-next primary", textContent: "Next →", disabled: i === lesson.steps.length - 1 });
    const end = el("button", { type: "button", className: "lesson-close", textContent: "End lesson" });
    prev.addEventListener("click", () => this.open(lesson.id, i - 1, []));
    next.addEventListener("click", () => this.open(lesson.id, i + 1, []));
    end.addEventListener("click", () => this.close());
    this.card.replaceChildren(
      el("p", { className: "lesson-where" }, `${lesson.title} · step ${i + 1} of ${lesson.steps.length}`),
      el("h2", { className: "lesson-title", textContent: step.title }),
      el("p", { className: "lesson-text", textContent: step.text }),
      el("p", { className: "lesson-runs note", textContent: `Showing ${runs.join(" · ")} — ${step.view} view, ${step.metric}.` }),
      el("p", { className: "lesson-message note", textContent: message }),
      el("div", { className: "buttons" }, prev, next, end),
    );
    this.card.dataset.lesson = lesson.id;
    this.card.dataset.step = String(i);
    this.card.hidden = false;
  }
}
