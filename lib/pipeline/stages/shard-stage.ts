import type { z } from 'zod';
import { type PipelineConfig, parseConfig } from '../config.js';
import type { StageDeps } from '../deps.js';
import { JudgeAnswerError, ModelRefusedError, ModelRequestError } from '../errors.js';
import { configKey, shardKey, shardRejectsKey, shardStatsKey } from '../keys.js';
import { costOf, emptyStats, priceOf } from '../ledger.js';
import type {
  GenerateRequest,
  JudgeRequest,
  JudgeResult,
  ModelClient,
  Usage,
} from '../models/model-client.js';
import { type PromptTemplate, templateFor, templateHash } from '../prompts/templates.js';
import type { ModelStage, Reject, ShardResult, ShardTask, StageName, StageStats } from '../schemas.js';
import { toJsonl } from '../store/store.js';

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
  readonly from: StageName;
  readonly schema: z.ZodType<I>;
  readonly handle: (record: I, ctx: StageContext) => Promise<O | Rejection>;
}

/**
 * Runs `fn` over items with at most `limit` in flight, keeping the input order. After the first
 * failure no new item starts: the shard will be retried, and calls made now would be paid twice.
 */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < items.length && !failed) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
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
  const config = parseConfig(JSON.parse(await store.get(configKey(runId))), `run ${runId} config`);
  const stageConfig = config.stages[spec.stage];
  const model = await deps.models.get(config.models[spec.stage]);
  const template = templateFor(spec.stage, stageConfig.template);
  const stats: StageStats = emptyStats();
  const price = priceOf(model.modelId, config);
  const meter = (usage: Usage) => {
    stats.calls++;
    stats.inputTokens += usage.inputTokens;
    stats.outputTokens += usage.outputTokens;
    stats.costUsd += costOf(usage, price);
  };

  const ctx: StageContext = {
    config,
    model,
    template,
    templateHash: templateHash(template),
    async generate(request) {
      const result = await model.generate(request);
      meter(result.usage);
      return result.text;
    },
    async judge<T>(request: JudgeRequest<T>) {
      let lastError: JudgeAnswerError | undefined;
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          const result: JudgeResult<T> = await model.judge(request);
          meter(result.usage);
          return result.value;
        } catch (error) {
          if (!(error instanceof JudgeAnswerError)) throw error;
          meter(error.usage);
          lastError = error;
        }
      }
      return new Rejection('invalid-judge-answer', lastError?.message.slice(0, 300) ?? 'no valid answer');
    },
  };

  const lines = (await store.get(shardKey(runId, shard, spec.from))).split('\n').filter((l) => l.trim());
  const rejects: Reject[] = [];
  const parsed: I[] = [];
  for (const [index, text] of lines.entries()) {
    const result = spec.schema.safeParse(safeJson(text));
    if (result.success) parsed.push(result.data);
    else {
      const id = (safeJson(text) as { id?: string } | undefined)?.id ?? `${shard}:${index + 1}`;
      rejects.push({
        id,
        stage: spec.stage,
        reason: 'corrupt-record',
        detail: result.error.message.slice(0, 300),
        source: spec.from,
        line: null,
      });
    }
  }

  const outcomes = await mapLimit(parsed, config.callConcurrency, async (record) => {
    try {
      return await spec.handle(record, ctx);
    } catch (error) {
      // Per-record failures become rejects; throttling, outages and bugs fail the shard for Retry.
      if (error instanceof ModelRefusedError) {
        meter(error.usage);
        return new Rejection('model-refused', error.message.slice(0, 300));
      }
      if (error instanceof ModelRequestError)
        return new Rejection('model-request-error', error.message.slice(0, 300));
      throw error;
    }
  });

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
    in: lines.length,
    out: kept.length,
    rejected: rejects.length,
    ms: Date.now() - started,
  });
  await store.put(shardKey(runId, shard, spec.stage), toJsonl(kept), { intermediate: true });
  await store.put(shardRejectsKey(runId, shard, spec.stage), toJsonl(rejects), { intermediate: true });
  await store.put(shardStatsKey(runId, shard, spec.stage), JSON.stringify(stats), { intermediate: true });
  return { runId, shard, records: kept.length };
}

const safeJson = (text: string): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
};
