import { createInterface } from 'node:readline';
import { z } from 'zod';
import { type PipelineConfig, parseConfig } from '../config.js';
import type { StageDeps } from '../deps.js';
import { BatchJobEndedError, BatchSubmitError, ModelConfigError } from '../errors.js';
import { configKey } from '../keys.js';
import { batchPriceOf, costOf, priceOf } from '../ledger.js';
import { mapLimit } from '../models/calls.js';
import { ModelStage, ShardOutcome, type ShardResult, type ShardTask } from '../schemas.js';
import { evaluate } from '../stages/evaluate.js';
import { filter } from '../stages/filter.js';
import { induce } from '../stages/induce.js';
import { respond } from '../stages/respond.js';
import type { Store } from '../store/store.js';
import {
  type BatchCall,
  batchInput,
  chunkCalls,
  jobIdentity,
  jobOutcome,
  joinBatchOutput,
} from './batch-job.js';
import {
  type BatchJobEnd,
  BatchJobSpec,
  type BatchJobState,
  BatchJobStats,
  BatchPlan,
  type BatchService,
  batchKey,
  batchOutputPrefix,
  batchPlanKey,
  ENDED_STATUSES,
} from './batch-service.js';
import { cacheBatchAnswers, collectStageCalls } from './prefill.js';

/** The shard function of each model stage: run in collect mode, it lists the calls a batch job can answer. */
const STAGE_FUNCTIONS: Record<ModelStage, (task: ShardTask, deps: StageDeps) => Promise<ShardResult>> = {
  induce,
  filter,
  respond,
  evaluate,
};

/** The batch step's payload: plan a stage's jobs, submit one job, or join one job's output. */
export const BatchTask = z.discriminatedUnion('action', [
  z.object({
    action: z.literal('plan'),
    runId: z.string().min(1),
    stage: ModelStage,
    /** The stage's shards: ids, or the outcomes of the stage before (failed shards are left out). */
    shards: z.array(z.union([z.string(), ShardOutcome])),
  }),
  z.object({
    action: z.literal('submit'),
    runId: z.string().min(1),
    stage: ModelStage,
    jobName: z.string().min(1),
    taskToken: z.string().min(1),
  }),
  z.object({
    action: z.literal('join'),
    runId: z.string().min(1),
    stage: ModelStage,
    jobName: z.string().min(1),
  }),
]);
export type BatchTask = z.infer<typeof BatchTask>;

/** What planning returns to the workflow: the jobs to submit, by name (the plan itself stays in the store). */
export interface PlanResult {
  readonly stage: ModelStage;
  readonly mode: BatchPlan['mode'];
  readonly jobs: string[];
  readonly onDemand: number;
}

/** A job's records, kept as `records.json`: the call behind each record id, and the shards that ask them. */
const JobRecords = z.object({ shards: z.array(z.string()), records: z.record(z.string(), z.string()) });

/** The batch step: one entry for the workflow's three batch states. */
export async function batchStep(
  task: BatchTask,
  deps: StageDeps,
): Promise<PlanResult | BatchJobEnd | BatchJobStats> {
  if (task.action === 'plan') return planBatch(task, deps);
  if (task.action === 'submit') return submitBatchJob(task, deps);
  return joinBatchJob(task, deps);
}

const serviceOf = (deps: StageDeps): BatchService => {
  if (!deps.batch)
    throw new ModelConfigError('batch mode needs a batch service (Bedrock in AWS, the emulator locally)');
  return deps.batch;
};

async function runConfig(store: Store, runId: string): Promise<PipelineConfig> {
  return parseConfig(JSON.parse(await store.get(configKey(runId))), `run ${runId} config`);
}

/**
 * Plans a model stage's batch jobs, once: collects the calls the cache cannot answer over the stage's
 * shards, cuts them into jobs within the per-job quota, and writes each job's input, records and spec.
 * The plan is written last and kept, so a rerun after a crash plans nothing new and submits the very same
 * jobs (named and tokened after their calls). A stage whose model cannot batch here, or (mode `auto`) with
 * fewer calls than `batch.autoMinRecords`, is planned as on-demand, with the reason.
 */
export async function planBatch(
  task: { runId: string; stage: ModelStage; shards: readonly (string | ShardOutcome)[] },
  deps: StageDeps,
): Promise<PlanResult> {
  const { runId, stage } = task;
  const { store } = deps;
  const result = (plan: BatchPlan): PlanResult => ({
    stage,
    mode: plan.mode,
    jobs: plan.jobs.map((j) => j.jobName),
    onDemand: plan.onDemand,
  });
  const kept = await store.tryGet(batchPlanKey(runId, stage));
  if (kept !== undefined) return result(BatchPlan.parse(JSON.parse(kept)));

  const service = serviceOf(deps);
  if (!deps.cache) throw new ModelConfigError('batch mode needs the call cache: batch answers are put there');
  const config = await runConfig(store, runId);
  const shards = task.shards.flatMap((s) => (typeof s === 'string' ? [s] : 'failed' in s ? [] : [s.shard]));
  const spec = config.models[stage];
  const onDemand = async (calls: number, reason: string) => {
    const plan: BatchPlan = { stage, mode: 'on-demand', reason, calls, jobs: [], onDemand: calls };
    await store.put(batchPlanKey(runId, stage), JSON.stringify(plan), { intermediate: true });
    return result(plan);
  };
  if (!service.accepts(spec)) return onDemand(0, `${spec} cannot run as a batch job here`);

  // Sorted: the same calls must make the same jobs, whatever order their records were read in.
  const calls = (
    await collectStageCalls(
      STAGE_FUNCTIONS[stage],
      shards.map((shard) => ({ runId, shard })),
      deps,
    )
  ).sort((a, b) => (a.key < b.key ? -1 : 1));
  const { batch } = config;
  if (config.mode === 'auto' && calls.length < batch.autoMinRecords)
    return onDemand(
      calls.length,
      `${calls.length} calls, below batch.autoMinRecords (${batch.autoMinRecords})`,
    );
  const chunked = chunkCalls(calls, batch.maxRecordsPerJob, batch.minRecordsPerJob);
  if (chunked.jobs.length === 0)
    return onDemand(
      calls.length,
      `${calls.length} calls, below the ${batch.minRecordsPerJob} records a job needs (batch.minRecordsPerJob)`,
    );

  const model = await deps.models.get(spec);
  const jobs: BatchPlan['jobs'] = [];
  for (const jobCalls of chunked.jobs) {
    // Two stacks of one account may run the same upload: the scope keeps their job names apart.
    const { jobName, token } = jobIdentity(
      `${service.scope}/${runId}`,
      stage,
      jobCalls.map((c) => c.key),
    );
    const input = batchInput(jobCalls);
    const key = (file: string) => batchKey(runId, stage, jobName, file);
    const records = Object.fromEntries([...input.calls].map(([recordId, call]) => [recordId, call.key]));
    const jobShards = [...new Set(jobCalls.map((c) => c.shard))].sort();
    const job: BatchJobSpec = {
      runId,
      stage,
      jobName,
      token,
      modelId: model.modelId,
      inputKey: key('input.jsonl'),
      outputPrefix: batchOutputPrefix(runId, stage, jobName),
      timeoutHours: batch.timeoutHours,
    };
    await store.put(job.inputKey, input.jsonl, { intermediate: true });
    await store.put(key('records.json'), JSON.stringify({ shards: jobShards, records }), {
      intermediate: true,
    });
    await store.put(key('job.json'), JSON.stringify(job), { intermediate: true });
    jobs.push({ jobName, records: jobCalls.length });
  }
  const plan: BatchPlan = {
    stage,
    mode: 'batch',
    calls: calls.length,
    jobs,
    onDemand: chunked.onDemand.length,
  };
  await store.put(batchPlanKey(runId, stage), JSON.stringify(plan), { intermediate: true });
  return result(plan);
}

const jobSpec = async (store: Store, runId: string, stage: ModelStage, jobName: string) =>
  BatchJobSpec.parse(JSON.parse(await store.get(batchKey(runId, stage, jobName, 'job.json'))));

/**
 * Submits one planned job (idempotently: the same token every time) and leaves the workflow waiting on
 * `taskToken`, which the job's state-change event releases. A job already ended (a rerun after the event
 * went to an earlier wait) fails the wait with BatchJobEndedError, so the workflow joins it at once; a
 * job the service refuses for good fails it with BatchSubmitError, and its records go on-demand. The
 * emulator ends every job at submit and returns its end as the wait's result.
 */
export async function submitBatchJob(
  task: { runId: string; stage: ModelStage; jobName: string; taskToken: string },
  deps: StageDeps,
): Promise<BatchJobEnd> {
  const { runId, stage, jobName } = task;
  const service = serviceOf(deps);
  const joined = await deps.store.tryGet(batchKey(runId, stage, jobName, 'stats.json'));
  const ended = (status: BatchJobEnd['status']): BatchJobEnd => {
    // A wait released by nothing would hang until its timeout: end it with an error the workflow catches.
    if (service.waitsForCallback)
      throw new BatchJobEndedError(`batch job ${jobName} has already ended (${status})`);
    return { jobName, status };
  };
  if (joined !== undefined) return ended(BatchJobStats.parse(JSON.parse(joined)).status);
  const job = await jobSpec(deps.store, runId, stage, jobName);
  let state: BatchJobState | undefined;
  try {
    state = await service.submit(job, task.taskToken, () => jobCalls(deps, job));
  } catch (error) {
    if (error instanceof BatchSubmitError)
      await deps.store.put(
        batchKey(runId, stage, jobName, 'refused.json'),
        JSON.stringify({ message: error.message }),
        {
          intermediate: true,
        },
      );
    throw error;
  }
  return state ? ended(state.status) : { jobName, status: 'Submitted' };
}

/**
 * The calls behind a job's records that the cache still cannot answer, by record id: collected again
 * from the job's shards, since a judge's schema does not survive being written down.
 */
async function jobCalls(deps: StageDeps, job: BatchJobSpec): Promise<Map<string, BatchCall>> {
  const { shards, records } = JobRecords.parse(
    JSON.parse(await deps.store.get(batchKey(job.runId, job.stage, job.jobName, 'records.json'))),
  );
  const calls = await collectStageCalls(
    STAGE_FUNCTIONS[job.stage],
    shards.map((shard) => ({ runId: job.runId, shard })),
    deps,
  );
  const byKey = new Map(calls.map((c) => [c.key, c]));
  return new Map(
    Object.entries(records).flatMap(([recordId, key]) => {
      const call = byKey.get(key);
      return call ? [[recordId, call] as const] : [];
    }),
  );
}

/**
 * Joins one job once its wait is over: reads its state; a job still running after the wait (the wait
 * timed out) is stopped. A completed or partly completed job's output is joined on recordId into the
 * call cache; a job that failed, expired, stopped or was never submitted leaves every record a cache
 * miss. Either way the stage then pays on-demand only for what the job did not answer. The job's stats
 * are kept, and a second join returns them.
 */
export async function joinBatchJob(
  task: { runId: string; stage: ModelStage; jobName: string },
  deps: StageDeps,
): Promise<BatchJobStats> {
  const { runId, stage, jobName } = task;
  const { store } = deps;
  const statsKey = batchKey(runId, stage, jobName, 'stats.json');
  const kept = await store.tryGet(statsKey);
  if (kept !== undefined) return BatchJobStats.parse(JSON.parse(kept));
  const service = serviceOf(deps);
  if (!deps.cache) throw new ModelConfigError('batch mode needs the call cache: batch answers are put there');
  const job = await jobSpec(store, runId, stage, jobName);
  let state = await service.state(job);
  if (state.status === 'NotSubmitted') {
    const refused = await store.tryGet(batchKey(runId, stage, jobName, 'refused.json'));
    state = {
      status: 'NotSubmitted',
      message: refused ? String(JSON.parse(refused).message) : 'never submitted',
    };
  } else if (!ENDED_STATUSES.has(state.status)) {
    await service.stop(job);
    state = {
      status: 'Stopped',
      message: `stopped: still ${state.status} when the workflow stopped waiting`,
    };
  }
  const open = await jobCalls(deps, job);
  const config = await runConfig(store, runId);
  // Streamed: each output line repeats its record's input, and a job holds up to 50,000 of them. Read
  // at once: readline drops lines it reads before anything iterates it.
  const lines =
    state.status !== 'NotSubmitted' && jobOutcome(state.status) === 'join' && state.outputKey
      ? createInterface({
          input: await store.getStream(state.outputKey),
          crlfDelay: Number.POSITIVE_INFINITY,
        })
      : [];
  const join = await joinBatchOutput(lines, open, job.modelId);
  await cacheBatchAnswers(join, deps.cache, jobName);
  const recordIds = Object.keys(
    JobRecords.parse(JSON.parse(await store.get(batchKey(runId, stage, jobName, 'records.json')))).records,
  );
  // An emulated job was paid as the on-demand calls that answered it.
  const price = service.emulated ? priceOf(job.modelId, config) : batchPriceOf(job.modelId, config);
  const stats: BatchJobStats = {
    jobName,
    status: state.status,
    records: recordIds.length,
    answered: join.answers.size,
    errored: join.errored.length,
    missing: recordIds.filter((id) => !join.seen.has(id)).length,
    inputTokens: join.billed.inputTokens,
    outputTokens: join.billed.outputTokens,
    costUsd: costOf(join.billed, price),
    ...(service.emulated ? { emulated: true } : {}),
    ...(state.message ? { message: state.message } : {}),
  };
  await store.put(statsKey, JSON.stringify(stats), { intermediate: true });
  return stats;
}

/**
 * Prefills a model stage with batch jobs the way the workflow does, in one call: plans, then submits and
 * joins each job, at most `batch.maxJobs` at once. For tests and tools with a service that ends jobs at
 * submit (the emulator); the deployed workflow runs the three steps as states.
 */
export async function prefillStage(
  task: { runId: string; stage: ModelStage; shards: readonly string[] },
  deps: StageDeps,
): Promise<{ plan: PlanResult; jobs: BatchJobStats[] }> {
  const plan = await planBatch(task, deps);
  const config = await runConfig(deps.store, task.runId);
  const jobs = await mapLimit(plan.jobs, config.batch.maxJobs, async (jobName) => {
    const ids = { runId: task.runId, stage: task.stage, jobName };
    await submitBatchJob({ ...ids, taskToken: 'local' }, deps).catch((error: Error) => {
      if (!(error instanceof BatchSubmitError || error instanceof BatchJobEndedError)) throw error;
    });
    return joinBatchJob(ids, deps);
  });
  return { plan, jobs };
}
