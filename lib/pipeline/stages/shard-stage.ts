import type { z } from 'zod';
import { worstCaseUsd } from '../budget.js';
import { type PipelineConfig, parseConfig } from '../config.js';
import type { StageDeps } from '../deps.js';
import { JudgeAnswerError, ModelConfigError, ModelRefusedError, ModelRequestError } from '../errors.js';
import { configKey, markerKey, shardKey, shardRejectsKey, shardStatsKey } from '../keys.js';
import { costOf, emptyStats, priceOf } from '../ledger.js';
import { type CachedCall, callKey } from '../models/call-cache.js';
import { callEntry, governedBy, identityOf, mapLimit, meterInto } from '../models/calls.js';
import type { GenerateRequest, JudgeRequest, ModelClient } from '../models/model-client.js';
import { inductionTemplate } from '../prompts/induction.js';
import { type PromptTemplate, templateFor, templateHash } from '../prompts/templates.js';
import {
  inputStageOf,
  type ModelStage,
  RunMarker,
  type ShardResult,
  type ShardTask,
  type StageStats,
} from '../schemas.js';
import { toJsonl } from '../store/store.js';
import { finishedStats, readShardRecords } from './shard-io.js';

/** A call the stage is collecting for a batch job instead of making: the record waits for its answer. */
class DeferredCall extends Error {
  override name = 'DeferredCall';
}

/** A record leaves the pipeline at this stage, for this reason. */
export class Rejection {
  constructor(
    readonly reason: string,
    readonly detail: string,
  ) {}
}

/** What a stage's record handler gets: the run's config, its model and template, metered calls. */
export interface StageContext {
  readonly config: PipelineConfig;
  readonly model: ModelClient;
  readonly template: PromptTemplate;
  /** The template's hash, recorded in every row. */
  readonly templateHash: string;
  generate(request: GenerateRequest): Promise<string>;
  /** A structured judge call; an answer that fails validation is asked for once more, then rejected. */
  judge<T>(request: JudgeRequest<T>): Promise<T | Rejection>;
}

interface ShardStageSpec<I extends { id: string; source: string; line: number }, O> {
  readonly stage: ModelStage;
  readonly schema: z.ZodType<I>;
  readonly handle: (record: I, ctx: StageContext) => Promise<O | Rejection>;
}

/**
 * Runs one model stage over one shard: reads the previous stage's records, handles each, and
 * writes the kept records, the rejects and the stage's stats. Stats are written last: a shard stage
 * is complete exactly when its stats exist.
 */
export async function runShardStage<I extends { id: string; source: string; line: number }, O>(
  spec: ShardStageSpec<I, O>,
  task: ShardTask,
  deps: StageDeps,
): Promise<ShardResult> {
  const started = Date.now();
  const { store } = deps;
  const { runId, shard } = task;
  const from = inputStageOf(spec.stage);
  // A resumed or redriven run skips a stage that finished.
  const done = await finishedStats(store, runId, shard, spec.stage);
  if (done) return { runId, shard, records: done.out };

  const config = parseConfig(JSON.parse(await store.get(configKey(runId))), `run ${runId} config`);
  const stageConfig = config.stages[spec.stage];
  const model = await deps.models.get(config.models[spec.stage]);
  // Induction's template depends on its model: the reversed training prompt for a tuned one.
  const template =
    spec.stage === 'induce'
      ? inductionTemplate(config.stages.induce, model.spec)
      : templateFor(spec.stage, stageConfig.template);
  const hash = templateHash(template);
  const stats: StageStats = emptyStats();
  const price = priceOf(model.modelId, config);
  const meter = meterInto(stats, price);
  const modelIdentity = identityOf(model);
  const execution = RunMarker.parse(JSON.parse(await store.get(markerKey(runId)))).executionId;
  // Calls whose cost this attempt's stats hold, paid now or recovered from an attempt that failed.
  const counted = new Set<string>();
  const governor = deps.governors?.get(model.spec, config);
  const governed = governedBy(governor, stats);
  /** Answers a call from the cache, or makes it, meters it and caches the answer before it is used. */
  const answer = async (
    request: GenerateRequest,
    attempt: number,
    invoke: () => Promise<CachedCall>,
  ): Promise<CachedCall> => {
    const cache = deps.cache;
    const key = cache && callKey({ spec: await modelIdentity(), request, templateHash: hash, attempt });
    if (cache && key) {
      const hit = await cache.get(key);
      if (hit) {
        stats.cacheHits++;
        // Paid by an earlier attempt at this shard in this execution, whose stats were never written.
        if (hit.paidBy?.execution === execution && hit.paidBy.shard === shard && !counted.has(key)) {
          meter(hit.usage);
          counted.add(key);
        }
        return hit;
      }
      stats.cacheMisses++;
      if (deps.collect) {
        deps.collect({ key, request });
        throw new DeferredCall(key);
      }
    }
    // Only a call about to be paid meets the budget: cached and collected ones cost nothing here.
    const hold = await deps.budget?.reserve(worstCaseUsd(request, price));
    let entry: CachedCall;
    try {
      entry = await callEntry(invoke);
    } catch (error) {
      // A failed call was not billed (throttled, refused at the door) or cannot say what it cost.
      hold?.release();
      throw error;
    }
    hold?.settle(costOf(entry.usage, price));
    meter(entry.usage);
    if (cache && key) {
      counted.add(key);
      await cache.put(key, { ...entry, paidBy: { execution, shard } });
    }
    return entry;
  };
  const refused = (entry: CachedCall & { kind: 'refused' }) =>
    new ModelRefusedError(entry.message, entry.usage);

  const ctx: StageContext = {
    config,
    model,
    template,
    templateHash: hash,
    async generate(request) {
      const entry = await answer(request, 0, async () => {
        const result = await governed(request, () => model.generate(request));
        return { kind: 'text', text: result.text, usage: result.usage };
      });
      if (entry.kind === 'refused') throw refused(entry);
      if (entry.kind !== 'text')
        throw new ModelRequestError(`cached answer of kind ${entry.kind} for a generation`);
      return entry.text;
    },
    async judge<T>(request: JudgeRequest<T>) {
      let last = 'no valid answer';
      // An answer that fails validation is asked for once more, as a call of its own (attempt 1).
      for (let attempt = 0; attempt < 2; attempt++) {
        const entry = await answer(request, attempt, async () => {
          try {
            const result = await governed(request, () => model.judge(request));
            return { kind: 'answer', value: result.value, usage: result.usage };
          } catch (error) {
            if (!(error instanceof JudgeAnswerError)) throw error;
            return { kind: 'invalid-answer', message: error.message, usage: error.usage };
          }
        });
        if (entry.kind === 'refused') throw refused(entry);
        if (entry.kind === 'answer') {
          const valid = request.schema.safeParse(entry.value);
          if (valid.success) return valid.data;
          last = `cached answer no longer matches the schema: ${valid.error.message}`;
        } else if (entry.kind === 'invalid-answer') last = entry.message;
      }
      return new Rejection('invalid-judge-answer', last.slice(0, 300));
    },
  };

  const {
    lines,
    records: parsed,
    rejects,
  } = await readShardRecords(store, task, spec.stage, from, spec.schema);

  if (deps.collect && !deps.cache)
    throw new ModelConfigError('a batch job needs the call cache to put its answers in');
  const outcomes = await mapLimit(parsed, config.callConcurrency, async (record) => {
    try {
      return await spec.handle(record, ctx);
    } catch (error) {
      if (error instanceof DeferredCall) return new Rejection('deferred', '');
      // Per-record failures become rejects; throttling, outages, the budget and bugs fail the shard.
      if (error instanceof ModelRefusedError)
        return new Rejection('model-refused', error.message.slice(0, 300));
      if (error instanceof ModelRequestError)
        return new Rejection('model-request-error', error.message.slice(0, 300));
      throw error;
    }
  });

  // Collecting for a batch job writes nothing: the stage runs for real once the answers are cached.
  if (deps.collect) return { runId, shard, records: 0 };
  const kept: O[] = [];
  for (const [i, outcome] of outcomes.entries()) {
    const record = parsed[i] as I;
    if (outcome instanceof Rejection)
      rejects.push({
        id: record.id,
        stage: spec.stage,
        reason: outcome.reason,
        detail: outcome.detail,
        source: record.source,
        line: record.line,
      });
    else kept.push(outcome);
  }

  Object.assign(stats, {
    in: lines,
    out: kept.length,
    rejected: rejects.length,
    ms: Date.now() - started,
  });
  await store.put(shardKey(runId, shard, spec.stage), toJsonl(kept), { intermediate: true });
  await store.put(shardRejectsKey(runId, shard, spec.stage), toJsonl(rejects), { intermediate: true });
  await store.put(shardStatsKey(runId, shard, spec.stage), JSON.stringify(stats), { intermediate: true });
  return { runId, shard, records: kept.length };
}
