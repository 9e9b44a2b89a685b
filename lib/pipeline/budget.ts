import { z } from 'zod';
import { BatchJobStats, BatchPlan, batchKey, batchPlanKey } from './batch/batch-service.js';
import { BudgetExceededError } from './errors.js';
import { manifestKey, runPrefix, shardStatsKey } from './keys.js';
import { costOf } from './ledger.js';
import { mapLimit } from './models/calls.js';
import { type GenerateRequest, type JudgeRequest, jsonSchemaOf } from './models/model-client.js';
import { Manifest, MODEL_STAGES, type ModelStage, StageStats } from './schemas.js';
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
 * real cost. Reservation is synchronous, so calls in flight together never hold more than the limit.
 */
export class Budget {
  readonly limitUsd: number;
  #spentUsd: number;
  #heldUsd = 0;

  /** A budget of `limitUsd`, of which `spentUsd` is already spent (a resumed run's). */
  constructor(limitUsd: number, spentUsd = 0) {
    if (!(Number.isFinite(limitUsd) && limitUsd >= 0))
      throw new RangeError(`a budget is a dollar amount of at least 0, not ${limitUsd}`);
    this.limitUsd = limitUsd;
    this.#spentUsd = spentUsd;
  }

  /** The budget of a run being resumed: what its stats record as paid counts as spent. */
  static async resumeFrom(store: Store, runId: string, limitUsd: number): Promise<Budget> {
    return new Budget(limitUsd, await spentBy(store, runId));
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
   * Holds `worstUsd` for a call about to be made, or throws BudgetExceededError when that would pass
   * the limit. A call that cannot cost anything (an in-process model) is never refused.
   */
  reserve(worstUsd: number): BudgetHold {
    if (worstUsd <= 0) return NOTHING_HELD;
    if (this.#spentUsd + this.#heldUsd + worstUsd > this.limitUsd + EPSILON_USD)
      throw new BudgetExceededError(
        `the next model call, at up to ${usd(worstUsd)}, would pass the budget of ${usd(this.limitUsd)}: ` +
          `${usd(this.#spentUsd)} spent, ${usd(this.#heldUsd)} held by calls in flight. What was written is ` +
          'kept: resume the run with a higher --max-budget',
      );
    this.#heldUsd += worstUsd;
    let open = true;
    const end = (spent: number) => {
      if (!open) return;
      open = false;
      this.#heldUsd = Math.max(0, this.#heldUsd - worstUsd);
      this.#spentUsd += spent;
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
 * Where a shard stage that failed records what its calls cost: its stats, which hold it once the stage
 * finishes (a resumed run meters those calls again from the cache), are written only then.
 */
export const unfinishedSpendKey = (runId: string, shard: string, stage: ModelStage) =>
  `${runPrefix(runId)}/shards/${shard}/${stage}.spent.json`;

const UnfinishedSpend = z.object({ costUsd: z.number().nonnegative() });

/**
 * Records what a failed attempt at a shard stage paid, unless an earlier attempt recorded more. Best
 * effort: a store that fails here fails the same way for the stage's own error, which matters more.
 */
export async function recordUnfinishedSpend(
  store: Store,
  runId: string,
  shard: string,
  stage: ModelStage,
  costUsd: number,
): Promise<void> {
  if (costUsd <= 0) return;
  const key = unfinishedSpendKey(runId, shard, stage);
  try {
    const earlier = await store.tryGet(key);
    const recorded = earlier === undefined ? 0 : UnfinishedSpend.parse(JSON.parse(earlier)).costUsd;
    if (costUsd > recorded) await store.put(key, JSON.stringify({ costUsd }), { intermediate: true });
  } catch {
    // The attempt's own error is rethrown by the caller.
  }
}

/**
 * What a run has paid, as its files record it: each shard stage's stats (or, for one that has not
 * finished, what its failed attempts recorded) and each batch job's stats. Zero before split finished.
 */
export async function spentBy(store: Store, runId: string): Promise<number> {
  const manifest = await store.tryGet(manifestKey(runId));
  if (manifest === undefined) return 0;
  const shards = Manifest.parse(JSON.parse(manifest)).shards.map((s) => s.shard);
  const stageKeys = shards.flatMap((shard) => MODEL_STAGES.map((stage) => ({ shard, stage })));
  const stageCosts = await mapLimit(stageKeys, 16, async ({ shard, stage }) => {
    const stats = await store.tryGet(shardStatsKey(runId, shard, stage));
    if (stats !== undefined) return StageStats.parse(JSON.parse(stats)).costUsd;
    const unfinished = await store.tryGet(unfinishedSpendKey(runId, shard, stage));
    return unfinished === undefined ? 0 : UnfinishedSpend.parse(JSON.parse(unfinished)).costUsd;
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
