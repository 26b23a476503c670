/**
 * The runs the page knows, and the lifetime of each shown run: its data and its event stream are
 * opened when the run is shown and closed when it is hidden or deleted. For a shown run the
 * stream is the one live source of its summary and progress; a run not shown keeps the summary
 * of the one list fetch (or of the moment it was hidden).
 */

import { api, followRun } from "./api.js";
import { MAX_COLUMNS, RunData, isTerminal } from "./rundata.js";

// Finished runs with more recorded steps than this are not replayed through the event stream:
// their heatmaps come from /series alone (downsampled by the server).
const REPLAY_LIMIT = 5000;

export class Runs {
  /** `onChange()` is called whenever a summary or a shown run's data changes. */
  constructor(metrics, onChange) {
    this.metrics = metrics;
    this.onChange = onChange;
    this.summaries = new Map(); // id -> summary, every run the page knows
    this.shown = new Map(); // id -> {data: RunData, close: (() => void) | null}
  }

  /** The one list fetch: every run's summary as the server has it now. */
  async load() {
    const list = await api.runs();
    for (const s of Array.isArray(list) ? list : list.runs ?? []) this.summaries.set(s.id, s);
    this.onChange();
  }

  add(summary) {
    this.summaries.set(summary.id, summary);
    this.onChange();
  }

  has(id) {
    return this.summaries.has(id);
  }

  summary(id) {
    return this.shown.get(id)?.data.summary ?? this.summaries.get(id);
  }

  /** Every known run's summary, newest first. */
  list() {
    return [...this.summaries.keys()].map((id) => this.summary(id)).sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  }

  data(id) {
    return this.shown.get(id)?.data;
  }

  /** Whether the run's event stream is open (it follows the run live). */
  streaming(id) {
    return Boolean(this.shown.get(id)?.close);
  }

  /** Steps done of `total`, from the stream for a shown run, else from the last summary seen. */
  progress(id) {
    const data = this.data(id);
    if (data) return data.progress();
    const s = this.summaries.get(id);
    return { done: s?.steps_done ?? 0, total: s?.config?.training?.steps ?? null };
  }

  /** Show exactly `ids` (known ones; the rest are returned): open what is new, close the rest. */
  show(ids, metric) {
    const wanted = new Set(ids);
    for (const id of [...this.shown.keys()]) if (!wanted.has(id)) this.close(id);
    for (const id of ids) if (this.has(id) && !this.shown.has(id)) this.open(id, metric);
    return ids.filter((id) => !this.has(id));
  }

  open(id, metric) {
    const summary = this.summaries.get(id);
    const entry = { data: new RunData(summary, this.metrics), close: null };
    this.shown.set(id, entry);
    const recorded = summary.records ?? (summary.steps_done ?? 0) / (summary.config?.recording?.record_every ?? 1);
    if (!isTerminal(summary) || recorded <= REPLAY_LIMIT) this.follow(entry);
    this.loadSeries(entry, metric);
  }

  /** Close the stream and drop the data; the summary as last seen stays for the run list. */
  close(id) {
    const entry = this.shown.get(id);
    if (!entry) return;
    entry.close?.();
    this.summaries.set(id, entry.data.summary);
    this.shown.delete(id);
  }

  /** Gone from the list at once, so that nothing asks the server about it while it deletes;
   *  back in the list if the server refused. */
  async remove(id) {
    this.close(id);
    const kept = this.summaries.get(id);
    this.summaries.delete(id);
    this.onChange();
    const r = await api.remove(id);
    if (!r.ok && r.status !== 404 && kept) {
      this.summaries.set(id, kept);
      this.onChange();
    }
    return r;
  }

  follow(entry) {
    const { data } = entry;
    data.live = true;
    const summarize = (summary) => {
      if (!summary?.status || this.shown.get(data.id) !== entry) return;
      data.summary = { ...data.summary, ...summary };
      this.onChange();
    };
    entry.close = followRun(data.id, {
      onRecords: (records) => {
        data.ingest(records);
        this.onChange();
      },
      onStatus: summarize,
      onEnd: (summary) => {
        entry.close = null; // closed by followRun
        summarize(summary);
      },
    });
  }

  /** Make sure every shown run has `metric`: runs not replayed fetch its history. */
  ensureMetric(metric) {
    for (const entry of this.shown.values()) {
      if (!entry.data.live || entry.data.metrics[metric].length === 0) this.loadSeries(entry, metric);
    }
  }

  /** Downsampled history of one metric; without a replay, of the loss and accuracy curves too. */
  async loadSeries(entry, metric) {
    const { data } = entry;
    try {
      const s = await api.series(data.id, metric, MAX_COLUMNS);
      if (data.metrics[metric].seed(s.steps, s.values)) data.revision++;
      if (!data.live && data.scalars.length === 0) {
        const [loss, accuracy] = await Promise.all(["loss", "accuracy"].map((m) => api.series(data.id, m, MAX_COLUMNS)));
        data.scalars.seed(loss.steps, [loss.values[0], accuracy.values[0] ?? [], []]);
      }
    } catch (err) {
      if (this.shown.get(data.id) === entry) console.warn(`no history for ${data.id}`, err);
    }
    this.onChange();
  }
}
