import type { ProgressEvent } from '../local/run-local.js';

/** What is known of one stage of a run at one moment; a figure not known yet is absent. */
export interface StageProgress {
  readonly stage: string;
  /** Shards (for a batch step: jobs) the stage finished, failed and has running, of how many. */
  readonly shards?: {
    readonly done: number;
    readonly total?: number;
    readonly failed?: number;
    readonly running?: number;
  };
  /** Records the finished shards took in, and how many the stage takes in all. */
  readonly records?: { readonly done: number; readonly total?: number };
  /** Records the stage sent on. */
  readonly kept?: number;
  /** Model calls paid for. */
  readonly calls?: number;
  /** Records a second since the stage started. */
  readonly rate?: number;
  /** Dollars paid so far. */
  readonly costUsd?: number;
  /** Anything else worth saying: `running`, `failed`, `6 rejects`. */
  readonly note?: string;
}

/** One line of a stage's figures: `induce    12/66 shards, 540/3000 records, 530 kept, 1234 calls, 45.0 records/s, $0.1234`. */
export function formatStage(p: StageProgress): string {
  const parts: string[] = [];
  if (p.shards) {
    const { done, total, failed, running } = p.shards;
    parts.push(
      `${done}${total === undefined ? '' : `/${total}`} ${p.stage.startsWith('batch-') ? 'jobs' : 'shards'}` +
        (failed ? ` (${failed} failed)` : '') +
        (running ? `, ${running} running` : ''),
    );
  }
  if (p.records)
    parts.push(`${p.records.done}${p.records.total === undefined ? '' : `/${p.records.total}`} records`);
  if (p.kept !== undefined) parts.push(`${p.kept} kept`);
  if (p.calls !== undefined) parts.push(`${p.calls} calls`);
  if (p.rate !== undefined) parts.push(`${p.rate.toFixed(1)} records/s`);
  if (p.costUsd !== undefined) parts.push(`$${p.costUsd.toFixed(4)}`);
  if (p.note) parts.push(p.note);
  return `${p.stage.padEnd(9)} ${parts.join(', ')}`.trimEnd();
}

/** Where progress goes: stderr, or a fake in tests. */
export interface ProgressStream {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** Options of a ProgressRenderer. */
export interface ProgressRendererOptions {
  /**
   * The least time between two redraws on a terminal; updates in between are drawn together.
   * @default 200 (5 redraws a second)
   */
  readonly intervalMs?: number;
  /** The clock; tests pass their own. @default Date.now */
  readonly now?: () => number;
}

const ESC = '\x1b[';

/**
 * Shows a run's progress stage by stage. On a terminal it keeps one line per stage and redraws them
 * in place (cursor up, clear), at most `intervalMs` apart, with lines that are said once printed above
 * them; elsewhere (a log, a pipe) it prints plain lines, one per change the caller words, as they come.
 */
export class ProgressRenderer {
  readonly #stream: ProgressStream;
  readonly #intervalMs: number;
  readonly #now: () => number;
  readonly #stages = new Map<string, StageProgress>();
  /** How many table lines are on the screen below the cursor's home. */
  #drawn = 0;
  #lastDraw = Number.NEGATIVE_INFINITY;
  #timer: NodeJS.Timeout | undefined;
  /** Whether figures changed since the last draw. */
  #dirty = false;
  #ended = false;

  constructor(stream: ProgressStream, options: ProgressRendererOptions = {}) {
    this.#stream = stream;
    this.#intervalMs = options.intervalMs ?? 200;
    this.#now = options.now ?? Date.now;
  }

  /** Whether the stages are redrawn in place. */
  get live(): boolean {
    return this.#stream.isTTY === true;
  }

  /** The last figures of each stage, in the order the stages first showed up. */
  get stages(): readonly StageProgress[] {
    return [...this.#stages.values()];
  }

  /** A line that stays: an event, a failure, a note. On a terminal it goes above the stage lines. */
  say(line: string): void {
    if (!this.live) {
      this.#stream.write(`${line}\n`);
      return;
    }
    // Kept whole: a line printed above the table stays on screen, and a failure must be read in full.
    this.#stream.write(`${this.#erase()}${line}\n${this.#table()}`);
    this.#lastDraw = this.#now();
    this.#dirty = false;
  }

  /**
   * Sets what is known of a stage. On a terminal the stage's line is redrawn (throttled); elsewhere
   * `line` is printed, when given: the caller says which changes are worth a line of a log.
   */
  update(progress: StageProgress, line?: string): void {
    this.#stages.set(progress.stage, progress);
    this.#dirty = true;
    if (!this.live) {
      if (line !== undefined) this.#stream.write(`${line}\n`);
      return;
    }
    this.#schedule();
  }

  /** Draws the last figures now and stops redrawing; the stage lines stay on the screen. */
  end(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.live && this.#dirty && !this.#ended) this.#draw();
    this.#ended = true;
  }

  #schedule(): void {
    if (this.#ended || this.#timer) return;
    const wait = this.#lastDraw + this.#intervalMs - this.#now();
    if (wait <= 0) {
      this.#draw();
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#dirty) this.#draw();
    }, wait);
    // A redraw still pending must not keep the process alive after the command is done.
    this.#timer.unref();
  }

  #draw(): void {
    this.#stream.write(`${this.#erase()}${this.#table()}`);
    this.#lastDraw = this.#now();
    this.#dirty = false;
  }

  /** Moves the cursor up to the first stage line and clears from there down. */
  #erase(): string {
    const up = this.#drawn > 0 ? `${ESC}${this.#drawn}A\r${ESC}0J` : '';
    this.#drawn = 0;
    return up;
  }

  #table(): string {
    const lines = [...this.#stages.values()].map((p) => this.#fit(formatStage(p)));
    this.#drawn = lines.length;
    return lines.map((l) => `${l}\n`).join('');
  }

  /** A line cut to the terminal's width: a wrapped line would throw the cursor-up count off. */
  #fit(line: string): string {
    const columns = this.#stream.columns;
    return columns && line.length >= columns ? `${line.slice(0, Math.max(1, columns - 2))}…` : line;
  }
}

/** Figures a local stage event may carry besides its record count. */
type StageFigures = { readonly in?: number; readonly calls?: number; readonly costUsd?: number };

/** What the local printer keeps of one shard stage. */
interface LocalStage {
  shards: number;
  kept: number;
  in?: number;
  calls?: number;
  costUsd?: number;
  started: number;
}

const add = (a: number | undefined, b: number | undefined) => (b === undefined ? a : (a ?? 0) + b);

/**
 * Turns the local engine's events into progress: one plain line per event as the `run` command has always
 * printed them, or stage lines redrawn in place on a terminal. Calls and cost show when the events carry
 * them.
 */
export function localProgress(renderer: ProgressRenderer, now: () => number = Date.now) {
  let shards = 0;
  /** Records going into a stage when its inputs are all known: what dedup let through. */
  const inputs = new Map<string, number>();
  const stages = new Map<string, LocalStage>();
  return (event: ProgressEvent & StageFigures) => {
    if (event.type === 'split') {
      shards = event.shards;
      renderer.update(
        {
          stage: 'split',
          shards: { done: event.shards, total: event.shards },
          records: { done: event.records },
        },
        `split     ${event.records} records -> ${event.shards} shards (run ${event.runId})`,
      );
      return;
    }
    if (event.type === 'stage-error') {
      renderer.say(
        `${event.stage.padEnd(9)} shard ${event.shard} failed: ${event.error}: ${event.message.slice(0, 200)} ` +
          '(retried or recorded)',
      );
      return;
    }
    if (event.stage === 'merge') return;
    if (event.stage.startsWith('batch-')) {
      const what =
        event.stage === 'batch-plan'
          ? event.records > 0
            ? `${event.records} jobs planned`
            : `no batch jobs, on-demand (why: report.json batch.${event.shard}.reason)`
          : event.stage === 'batch-join'
            ? `${event.records} answers joined`
            : 'submitted';
      renderer.say(`batch     ${event.shard}: ${what} (${event.ms} ms)`);
      return;
    }
    if (event.stage.startsWith('dedup')) {
      // A dedup pass is one step over all shards; what it lets through is what the next Map takes in.
      inputs.set(event.stage === 'dedup-texts' ? 'induce' : 'filter', event.records);
      renderer.update(
        { stage: event.stage, kept: event.records },
        `${event.stage.padEnd(9)} ${event.records} records go on (${event.ms} ms)`,
      );
      return;
    }
    const at = now();
    const d = stages.get(event.stage) ?? { shards: 0, kept: 0, started: at - event.ms };
    d.shards++;
    d.kept += event.records;
    d.in = add(d.in, event.in);
    d.calls = add(d.calls, event.calls);
    d.costUsd = add(d.costUsd, event.costUsd);
    stages.set(event.stage, d);
    const seconds = Math.max(at - d.started, 1) / 1000;
    const total = inputs.get(event.stage);
    renderer.update(
      {
        stage: event.stage,
        shards: { done: d.shards, total: shards },
        ...(d.in === undefined ? {} : { records: { done: d.in, ...(total === undefined ? {} : { total }) } }),
        kept: d.kept,
        ...(d.calls === undefined ? {} : { calls: d.calls }),
        rate: (d.in ?? d.kept) / seconds,
        ...(d.costUsd === undefined ? {} : { costUsd: d.costUsd }),
      },
      `${event.stage.padEnd(9)} shard ${d.shards}/${shards} done, ${d.kept} kept so far` +
        (d.calls === undefined ? '' : `, ${d.calls} calls`) +
        (d.costUsd === undefined ? '' : `, $${d.costUsd.toFixed(4)}`) +
        ` (${event.ms} ms)`,
    );
  };
}
