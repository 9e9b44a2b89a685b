import { z } from 'zod';
import { type PipelineConfig, parseConfig } from '../config.js';
import type { StageDeps } from '../deps.js';
import { ModelConfigError, ModelTransientError } from '../errors.js';
import { configKey, runPrefix } from '../keys.js';
import { costOf, priceOf } from '../ledger.js';
import { mapLimit } from '../models/calls.js';
import { parseModelSpec } from '../models/registry.js';
import type { ModelStage, ShardResult, ShardTask } from '../schemas.js';
import {
  BATCH_JOB_STATUSES,
  type BatchCall,
  batchInput,
  chunkCalls,
  jobIdentity,
  jobOutcome,
  joinBatchOutput,
} from './batch-job.js';
import { cacheBatchAnswers, collectStageCalls } from './prefill.js';

/** One batch job to run: where its input is, where its output goes, and the calls behind its records. */
export interface BatchJobSpec {
  readonly jobName: string;
  /** The idempotency token: a retried submit of the same job starts no second billed job. */
  readonly token: string;
  readonly modelId: string;
  readonly inputKey: string;
  readonly outputPrefix: string;
  readonly calls: ReadonlyMap<string, BatchCall>;
}

/** How a job ended, and the lines of the `.jsonl.out` it wrote (none when it failed). */
export interface BatchJobResult {
  readonly status: (typeof BATCH_JOB_STATUSES)[number];
  readonly output: Iterable<string> | AsyncIterable<string>;
}

/** Runs batch jobs: Bedrock in AWS, the local emulator here; either way without paying for idle waiting. */
export interface BatchRunner {
  run(job: BatchJobSpec): Promise<BatchJobResult>;
}

/** The limits of batch jobs, from the model's quotas. */
export interface BatchLimits {
  /** The fewest records Bedrock takes in one job (a quota per model, commonly 100). */
  readonly minRecordsPerJob: number;
  /** The most records in one job (about 50,000). */
  readonly maxRecordsPerJob: number;
  /** Jobs submitted or running at once for one model. */
  readonly maxJobs: number;
  /** Batch prices as a fraction of on-demand ones. */
  readonly priceFactor: number;
}

/** What one stage's batch jobs did: the figures the report shows under mode `batch`. */
export const BatchStageStats = z.object({
  stage: z.string(),
  jobs: z.array(
    z.object({
      jobName: z.string(),
      status: z.enum(BATCH_JOB_STATUSES),
      records: z.number().int(),
      answered: z.number().int(),
      errored: z.number().int(),
      missing: z.number().int(),
      inputTokens: z.number().int(),
      outputTokens: z.number().int(),
      costUsd: z.number(),
    }),
  ),
  /** Calls too few for a job of their own, left to on-demand. */
  onDemand: z.number().int(),
});
export type BatchStageStats = z.infer<typeof BatchStageStats>;

/** Where a stage's batch job keeps its input, output and stats, by job name. */
export const batchKey = (runId: string, stage: ModelStage, jobName: string, file: string) =>
  `${runPrefix(runId)}/batch/${stage}/${jobName}/${file}`;

type StageFunction = (task: ShardTask, deps: StageDeps) => Promise<ShardResult>;

/**
 * Prefills a model stage over all of a run's shards with batch jobs: collects the calls the cache
 * cannot answer, writes them as jobs of at most `maxRecordsPerJob`, runs at most `maxJobs` at once, and
 * puts each answer into the call cache. A job that failed, stopped or expired, and any record it left out
 * or failed, simply stays a cache miss: the stage pays for it on-demand when it runs. A job is named
 * after its calls and keeps its stats when it ends, so a rerun never submits the same calls again.
 */
export async function prefillStage(
  options: {
    readonly runId: string;
    readonly stage: ModelStage;
    readonly stageFunction: StageFunction;
    readonly shards: readonly string[];
    readonly limits: BatchLimits;
    readonly runner: BatchRunner;
  },
  deps: StageDeps,
): Promise<BatchStageStats> {
  const { runId, stage, limits, runner } = options;
  const { store, cache } = deps;
  if (!cache) throw new ModelConfigError('batch mode needs the call cache: its answers are put there');
  const config: PipelineConfig = parseConfig(
    JSON.parse(await store.get(configKey(runId))),
    `run ${runId} config`,
  );
  // Batch jobs are Bedrock's, in Converse form: any other provider, or a custom model called through
  // InvokeModel with a raw prompt, answers a different request and stays on-demand.
  if (parseModelSpec(config.models[stage]).provider !== 'bedrock') return { stage, jobs: [], onDemand: 0 };
  const model = await deps.models.get(config.models[stage]);
  const price = priceOf(model.modelId, config);
  const batchPrice = {
    inputPer1k: price.inputPer1k * limits.priceFactor,
    outputPer1k: price.outputPer1k * limits.priceFactor,
  };

  const tasks = options.shards.map((shard) => ({ runId, shard }));
  // Sorted: the same calls must make the same jobs, whatever order their records were read in.
  const calls = (await collectStageCalls(options.stageFunction, tasks, deps)).sort((a, b) =>
    a.key < b.key ? -1 : 1,
  );
  const { jobs, onDemand } = await planJobs(runId, stage, calls, limits, deps);
  const byKey = new Map(calls.map((c) => [c.key, c]));
  const results = await mapLimit(jobs, limits.maxJobs, async (keys) => {
    // Named after the planned calls, so a rerun names, and submits, the very same job.
    const { jobName, token } = jobIdentity(runId, stage, keys);
    const statsKey = batchKey(runId, stage, jobName, 'stats.json');
    const done = await store.tryGet(statsKey);
    if (done) return BatchStageStats.shape.jobs.element.parse(JSON.parse(done));
    const inputKey = batchKey(runId, stage, jobName, 'input.jsonl');
    const recordsKey = batchKey(runId, stage, jobName, 'records.json');
    // The input is written once: a resubmit with the same token must carry the same records.
    const written = await store.tryGet(recordsKey);
    let records: Record<string, string>;
    if (written === undefined) {
      const input = batchInput(keys.flatMap((k) => byKey.get(k) ?? []));
      records = Object.fromEntries([...input.calls].map(([recordId, call]) => [recordId, call.key]));
      await store.put(inputKey, input.jsonl, { intermediate: true });
      await store.put(recordsKey, JSON.stringify(records), { intermediate: true });
    } else records = z.record(z.string(), z.string()).parse(JSON.parse(written));
    // Only calls still unanswered are joined: one answered before a crash keeps its cached answer.
    const open = new Map(
      Object.entries(records).flatMap(([recordId, key]) => {
        const call = byKey.get(key);
        return call ? [[recordId, call] as const] : [];
      }),
    );
    const result = await runner.run({
      jobName,
      token,
      modelId: model.modelId,
      inputKey,
      outputPrefix: batchKey(runId, stage, jobName, 'output/'),
      calls: open,
    });
    const outcome = jobOutcome(result.status);
    // A job still running has not ended: keeping its stats would mean never reading its output.
    if (outcome === 'wait') throw new ModelTransientError(`batch job ${jobName} is still ${result.status}`);
    const lines: string[] = [];
    if (outcome === 'join') for await (const line of result.output) lines.push(line);
    // Named as on-demand names the model, so reject details read the same in both modes.
    const join = joinBatchOutput(lines, open, model.modelId);
    await cacheBatchAnswers(join, cache, jobName);
    let inputTokens = 0;
    let outputTokens = 0;
    for (const entry of join.answers.values()) {
      inputTokens += entry.usage.inputTokens;
      outputTokens += entry.usage.outputTokens;
    }
    const stats = {
      jobName,
      status: result.status,
      records: Object.keys(records).length,
      answered: join.answers.size,
      errored: join.errored.length,
      missing: join.missing.length,
      inputTokens,
      outputTokens,
      costUsd: costOf({ inputTokens, outputTokens }, batchPrice),
    };
    await store.put(statsKey, JSON.stringify(stats), { intermediate: true });
    return stats;
  });
  return { stage, jobs: results, onDemand };
}

/** The jobs of a stage, once planned: which calls each job answers, by key. */
const BatchPlan = z.object({ jobs: z.array(z.array(z.string())), onDemand: z.number().int() });

/**
 * The stage's jobs, as the keys of their calls: planned once, and kept, so a rerun after a crash submits
 * the very same jobs (their names and tokens come from their calls) instead of cutting new ones from what
 * is still unanswered, which would bill a job's calls twice. Calls no planned job takes, and those a job
 * failed or left out, are paid on-demand when the stage runs.
 */
async function planJobs(
  runId: string,
  stage: ModelStage,
  calls: readonly BatchCall[],
  limits: BatchLimits,
  deps: StageDeps,
): Promise<{ jobs: string[][]; onDemand: number }> {
  const key = `${runPrefix(runId)}/batch/${stage}/plan.json`;
  const kept = await deps.store.tryGet(key);
  if (kept === undefined) {
    const planned = chunkCalls(calls, limits.maxRecordsPerJob, limits.minRecordsPerJob);
    const jobs = planned.jobs.map((job) => job.map((c) => c.key));
    await deps.store.put(key, JSON.stringify({ jobs, onDemand: planned.onDemand.length }), {
      intermediate: true,
    });
    return { jobs, onDemand: planned.onDemand.length };
  }
  return BatchPlan.parse(JSON.parse(kept));
}
