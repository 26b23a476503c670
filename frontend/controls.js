/** Play / pause / step beside the heatmap: they act on every shown run that can take them. */

export const STEP_SIZES = [1, 10, 100];

/** Which shown runs each button would act on, from their statuses. */
export function actionable(runs) {
  const status = (r) => r.summary.status;
  return {
    pause: runs.filter((r) => status(r) === "running" || status(r) === "queued"),
    play: runs.filter((r) => status(r) === "paused"),
    step: runs.filter((r) => status(r) === "paused"),
  };
}

function button(id, text, label) {
  const b = Object.assign(document.createElement("button"), { type: "button", id, textContent: text });
  b.setAttribute("aria-label", label);
  return b;
}

export class RunControls {
  /** api: {pause(id), resume(id), advance(id, n)}, each resolving to {ok, status, data};
   *  onChange() runs after a request, so the caller can refresh what it shows. */
  constructor(container, api, onChange = () => {}) {
    this.api = api;
    this.onChange = onChange;
    this.runs = [];
    this.pause = button("run-pause", "❚❚ Pause", "pause the shown runs");
    this.play = button("run-play", "▶ Play", "resume the shown paused runs");
    this.step = button("run-step", "Step", "train the shown paused runs a few more steps");
    this.size = Object.assign(document.createElement("select"), { id: "run-step-size" });
    this.size.setAttribute("aria-label", "steps per click of Step");
    this.size.append(...STEP_SIZES.map((n) => new Option(`+${n} step${n > 1 ? "s" : ""}`, String(n))));
    this.size.value = "10";
    this.state = Object.assign(document.createElement("span"), { className: "run-controls-state" });
    this.pause.addEventListener("click", () => this.act("pause", (id) => this.api.pause(id)));
    this.play.addEventListener("click", () => this.act("play", (id) => this.api.resume(id)));
    this.step.addEventListener("click", () => {
      const n = Number(this.size.value);
      this.act("step", (id) => this.api.advance(id, n));
    });
    container.replaceChildren(this.play, this.pause, this.step, this.size, this.state);
    this.render([]);
  }

  /** Enable each button when some shown run can take it. */
  render(runs) {
    this.runs = runs;
    const can = actionable(runs);
    this.pause.disabled = can.pause.length === 0;
    this.play.disabled = can.play.length === 0;
    this.step.disabled = can.step.length === 0;
    this.size.disabled = this.step.disabled;
    const paused = can.play.length;
    this.state.textContent = paused ? `${paused} of ${runs.length} shown paused` : "";
  }

  async act(which, request) {
    const targets = actionable(this.runs)[which];
    const replies = await Promise.all(targets.map((r) => request(r.id)));
    replies.forEach((reply, i) => {
      // 409: the run ended or resumed meanwhile (a race with the stream), not a page error.
      // A reply's summary is not applied: the run's stream is its one live source, and a reply
      // can arrive after a newer status event (advance answers "running" after "paused" came).
      if (!reply.ok) console.warn(`${which} ${targets[i].id}: ${reply.status}`, reply.data?.detail);
    });
    this.render(this.runs);
    this.onChange();
  }
}
