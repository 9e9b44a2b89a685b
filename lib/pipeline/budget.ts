import { z } from 'zod';
import { BatchJobStats, BatchPlan, batchKey, batchPlanKey } from './batch/batch-service.js';
import { BudgetExceededError } from './errors.js';
import { manifestKey, runPrefix, shardStatsKey } from './keys.js';
import { costOf } from './ledger.js';
import { mapLimit } from './models/calls.js';
import { type GenerateRequest, type JudgeRequest, jsonSchemaOf } from './models/model-client.js';
import { Manifest, MODEL_STAGES, StageStats } from './schemas.js';
import type { Store } from './store/store.js';

/** A reservation against a budget, ended once: settled with what the call cost, or released unused. */
export interface BudgetHold {
  /** Ends the hold and counts `usd`, what the call really cost, as spent. */
  settle(usd: number): void;
  /** Ends the hold without spending: the call was not made, or failed unbilled. */
  release(): void;
}

const NOTHING_HELD: BudgetHold = { settle: () => {}, release: () => {} };

// Sums of floating-point dollars drift in the last bits; a hair over the limit is the limit.
const EPSILON_USD = 1e-9;

const usd = (n: number) => `$${n.toFixed(4)}`;

/**
 * A run's spending limit, shared by every shard of one local execution (one process). A paid call first
 * reserves its worst-case cost and is refused with BudgetExceededError, before it is made, when what is
 * spent and what calls in flight hold would pass the limit with it; once answered, it settles with its
 * real cost. Holds are taken one at a time, so calls in flight together never hold more than the limit.
 */
export class Budget {
  readonly limitUsd: number;
  #spentUsd: number;
  #heldUsd = 0;
  readonly #waiters: (() => void)[] = [];
  /** Writes what this budget has committed, for a resumed run; set by `forRun`. */
  #persist: (committedUsd: number) => Promise<void> = async () => {};

  /** A budget of `limitUsd`, of which `spentUsd` is already spent (a resumed run's). */
  constructor(limitUsd: number, spentUsd = 0) {
    if (!(Number.isFinite(limitUsd) && limitUsd >= 0))
      throw new RangeError(`a budget is a dollar amount of at least 0, not ${limitUsd}`);
    this.limitUsd = limitUsd;
    this.#spentUsd = spentUsd;
  }

  /**
   * The budget of a run, kept in `runs/<id>/budget.json`: each attempt (a process running the run) writes
   * there what it has committed (paid, plus the worst case of its calls in flight) BEFORE each call, so a
   * run killed at any point never finds less than it paid. A resumed run starts from the sum of the
   * earlier attempts, or from the stats of finished stages if that is more (a run started without a budget).
   */
  static async forRun(store: Store, runId: string, limitUsd: number): Promise<Budget> {
    const key = budgetKey(runId);
    const kept = await store.tryGet(key);
    const attempts = kept === undefined ? {} : BudgetRecord.parse(JSON.parse(kept)).attempts;
    const earlier = Object.values(attempts).reduce((n, usd) => n + usd, 0);
    const spent = Math.max(earlier, await spentBy(store, runId));
    const attempt = `${Date.now().toString(36)}-${Object.keys(attempts).length}`;
    let writing = Promise.resolve();
    let written = -1;
    const persist = (committedUsd: number) => {
      writing = writing.then(async () => {
        if (committedUsd === written) return;
        written = committedUsd;
        const record = { attempts: { ...attempts, [attempt]: committedUsd } };
        await store.put(key, JSON.stringify(record), { intermediate: true });
      });
      return writing;
    };
    const budget = new Budget(limitUsd, spent);
    budget.#persist = (usd) => persist(usd - spent);
    return budget;
  }

  /** Dollars paid so far. */
  get spentUsd(): number {
    return this.#spentUsd;
  }

  /** Dollars held by calls in flight. */
  get heldUsd(): number {
    return this.#heldUsd;
  }

  /**
   * Holds `worstUsd` for a call about to be made. While calls in flight hold what it needs, it waits for
   * them to settle (they rarely cost their worst case); it throws BudgetExceededError only when what is
   * spent leaves no room for it. A call that cannot cost anything (an in-process model) is never refused.
   */
  async reserve(worstUsd: number): Promise<BudgetHold> {
    if (worstUsd <= 0) return NOTHING_HELD;
    for (;;) {
      if (this.#spentUsd + worstUsd > this.limitUsd + EPSILON_USD)
        throw new BudgetExceededError(
          `the next model call, at up to ${usd(worstUsd)}, would pass the budget of ${usd(this.limitUsd)}: ` +
            `${usd(this.#spentUsd)} spent. What was written is kept: resume the run with a higher --max-budget`,
        );
      if (this.#spentUsd + this.#heldUsd + worstUsd <= this.limitUsd + EPSILON_USD) break;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    this.#heldUsd += worstUsd;
    // Written before the call is made: a run killed during it finds the call's worst case committed.
    await this.#persist(this.#spentUsd + this.#heldUsd);
    let open = true;
    const end = (spent: number) => {
      if (!open) return;
      open = false;
      this.#heldUsd = Math.max(0, this.#heldUsd - worstUsd);
      this.#spentUsd += spent;
      void this.#persist(this.#spentUsd + this.#heldUsd).catch(() => {});
      for (const wake of this.#waiters.splice(0)) wake();
    };
    return { settle: (spent) => end(spent), release: () => end(0) };
  }
}

/**
 * The most a call can cost: every token it may write, and an input of as many tokens as its prompt,
 * system prompt and tool schema have UTF-8 bytes (a byte-level tokenizer never makes more). The cost is
 * rarely near this; the budget only refuses a call when this much is not left.
 */
export function worstCaseUsd(
  request: GenerateRequest | JudgeRequest<unknown>,
  price: { inputPer1k: number; outputPer1k: number },
): number {
  if (price.inputPer1k === 0 && price.outputPer1k === 0) return 0;
  const tool =
    'schema' in request
      ? JSON.stringify(jsonSchemaOf(request.schema)) + request.toolName + request.toolDescription
      : '';
  const inputTokens =
    Buffer.byteLength(request.system) + Buffer.byteLength(request.prompt) + Buffer.byteLength(tool);
  return costOf({ inputTokens, outputTokens: request.maxTokens }, price);
}

/**
 * What a run has paid, as its stats record it: each finished shard stage's and each batch job's. Zero
 * before split finished.
 */
export async function spentBy(store: Store, runId: string): Promise<number> {
  const manifest = await store.tryGet(manifestKey(runId));
  if (manifest === undefined) return 0;
  const shards = Manifest.parse(JSON.parse(manifest)).shards.map((s) => s.shard);
  const stageKeys = shards.flatMap((shard) => MODEL_STAGES.map((stage) => ({ shard, stage })));
  const stageCosts = await mapLimit(stageKeys, 16, async ({ shard, stage }) => {
    const stats = await store.tryGet(shardStatsKey(runId, shard, stage));
    return stats === undefined ? 0 : StageStats.parse(JSON.parse(stats)).costUsd;
  });
  const batchCosts = await mapLimit([...MODEL_STAGES], 4, async (stage) => {
    const plan = await store.tryGet(batchPlanKey(runId, stage));
    if (plan === undefined) return 0;
    let sum = 0;
    for (const { jobName } of BatchPlan.parse(JSON.parse(plan)).jobs) {
      const stats = await store.tryGet(batchKey(runId, stage, jobName, 'stats.json'));
      if (stats !== undefined) sum += BatchJobStats.parse(JSON.parse(stats)).costUsd;
    }
    return sum;
  });
  return [...stageCosts, ...batchCosts].reduce((n, c) => n + c, 0);
}

/** Where a run's budget keeps what each attempt at the run committed. */
export const budgetKey = (runId: string) => `${runPrefix(runId)}/budget.json`;

const BudgetRecord = z.object({ attempts: z.record(z.string(), z.number().nonnegative()) });
