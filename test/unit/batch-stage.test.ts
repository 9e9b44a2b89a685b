import { describe, expect, it } from 'vitest';
import { recordIdOf } from '../../lib/pipeline/batch/batch-job.js';
import { type BatchService, batchKey } from '../../lib/pipeline/batch/batch-service.js';
import {
  joinBatchJob,
  planBatch,
  prefillStage,
  submitBatchJob,
} from '../../lib/pipeline/batch/batch-stage.js';
import type { EmulatorOptions } from '../../lib/pipeline/batch/emulator.js';
import { LocalBatchService } from '../../lib/pipeline/batch/local-batch.js';
import type { PipelineConfigInput } from '../../lib/pipeline/config.js';
import type { StageDeps } from '../../lib/pipeline/deps.js';
import { BatchSubmitError } from '../../lib/pipeline/errors.js';
import { configKey, outputKey } from '../../lib/pipeline/keys.js';
import { CallCache } from '../../lib/pipeline/models/call-cache.js';
import type { ModelStage, Pair, ShardResult, ShardTask } from '../../lib/pipeline/schemas.js';
import { evaluate } from '../../lib/pipeline/stages/evaluate.js';
import { filter } from '../../lib/pipeline/stages/filter.js';
import { induce } from '../../lib/pipeline/stages/induce.js';
import { merge } from '../../lib/pipeline/stages/merge.js';
import { respond } from '../../lib/pipeline/stages/respond.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { FakeModel } from '../support/fake-model.js';
import { dedupInstructions, dedupTexts, fakeDeps, putAndSplit, readJsonl } from '../support/pipeline.js';
import { tempDir } from '../support/temp.js';
import { texts } from '../support/texts.js';

const STAGES: Record<ModelStage, (task: ShardTask, deps: StageDeps) => Promise<ShardResult>> = {
  induce,
  filter,
  respond,
  evaluate,
};
const BATCH: PipelineConfigInput = {
  mode: 'batch',
  batch: { minRecordsPerJob: 100, maxRecordsPerJob: 150, maxJobs: 2 },
};

/** `count` texts split into shards of `shardSize` with a call cache, their duplicates removed. */
async function splitTexts(
  model: FakeModel,
  count: number,
  shardSize = 40,
  config: PipelineConfigInput = BATCH,
) {
  const setup = fakeDeps(model, { shardSize, ...config });
  const deps: StageDeps = { ...setup.deps, cache: new CallCache(new FsStore(tempDir())) };
  const body = texts(count)
    .map((text, i) => JSON.stringify({ id: `c${i}`, text }))
    .join('\n');
  const { runId, shards } = await putAndSplit(setup.deps, 'complaints.jsonl', body);
  await dedupTexts({ runId }, deps);
  return { ...setup, deps, runId, shards };
}

/** The emulator answering with `model`, misbehaving as `options` says. */
const emulator = (
  deps: StageDeps,
  model: FakeModel,
  options?: (job: { jobName: string }) => EmulatorOptions,
) => new LocalBatchService(deps.store, async () => model, options);

/**
 * Runs the stages in pipeline order over one input, each model stage over every shard; with a batch
 * service, each model stage is first prefilled by batch jobs, as the batch workflow does.
 */
async function runStages(model: FakeModel, service?: (deps: StageDeps) => BatchService) {
  const setup = await splitTexts(model, 320);
  const { runId, shards } = setup;
  const deps = service ? { ...setup.deps, batch: service(setup.deps) } : setup.deps;
  const batch: Record<string, unknown> = {};
  const stage = async (name: ModelStage) => {
    if (service) batch[name] = await prefillStage({ runId, stage: name, shards }, deps);
    for (const shard of shards) await STAGES[name]({ runId, shard }, deps);
  };
  await stage('induce');
  await dedupInstructions({ runId }, deps);
  for (const name of ['filter', 'respond', 'evaluate'] as const) await stage(name);
  const report = await merge({ runId, shardResults: [] }, deps);
  const pairs = await readJsonl<Pair>(setup.store, outputKey(runId, 'pairs.jsonl'));
  return { ...setup, deps, runId, pairs, report, batch };
}

/** A service that never ends a job itself, as Bedrock does not: it records what it was asked. */
function bedrockLike(states: Record<string, string> = {}) {
  const asked: { submit: string[]; stop: string[] } = { submit: [], stop: [] };
  const service: BatchService = {
    waitsForCallback: true,
    emulated: false,
    scope: 'bucket',
    accepts: (spec) => spec.startsWith('bedrock:'),
    submit: async (job) => {
      asked.submit.push(job.jobName);
      const status = states[job.jobName];
      return status ? ({ status } as never) : undefined;
    },
    state: async (job) => ({ status: (states[job.jobName] ?? 'InProgress') as never }),
    stop: async (job) => {
      asked.stop.push(job.jobName);
    },
  };
  return { service, asked };
}

describe('batch mode', () => {
  it('gives the same pairs as on-demand over 320 records, paying on-demand only for what batch left out', async () => {
    // Prepare
    const onDemandModel = new FakeModel();
    const batchModel = new FakeModel();
    const misbehaving = (deps: StageDeps) =>
      emulator(deps, new FakeModel(), () => ({
        errorRecordIds: new Set([recordIdOf(3)]),
        dropRecordIds: new Set([recordIdOf(5)]),
      }));

    // Act
    const onDemand = await runStages(onDemandModel);
    const batch = await runStages(batchModel, misbehaving);

    // Assess
    expect(onDemand.pairs.length).toBeGreaterThanOrEqual(300);
    const strip = (pairs: Pair[]) =>
      pairs.map(({ id, prompt, chosen, rejected }) => ({ id, prompt, chosen, rejected }));
    expect(strip(batch.pairs)).toEqual(strip(onDemand.pairs));
    // Every stage's 320 calls go as three jobs of 107, 107 and 106 (at most 150, at least 100), each
    // with one errored and one missing record, paid on-demand instead: 6 calls a stage.
    for (const stage of ['induce', 'filter', 'respond', 'evaluate'])
      expect(batch.batch[stage]).toMatchObject({
        plan: { mode: 'batch', onDemand: 0 },
        jobs: [107, 107, 106].map((records) => ({
          records,
          answered: records - 2,
          errored: 1,
          missing: 1,
          status: 'PartiallyCompleted',
        })),
      });
    expect(batchModel.calls).toHaveLength(4 * 6);
    expect(onDemandModel.calls).toHaveLength(4 * 320);
  });

  it('plans on-demand a stage whose model the service cannot batch, and says why', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 120);
    const { runId, shards } = setup;
    const config = JSON.parse(await setup.store.get(configKey(runId)));
    const custom = 'bedrock-custom:arn:aws:bedrock:us-east-1:123456789012:imported-model/x#llama';
    await setup.store.put(
      configKey(runId),
      JSON.stringify({ ...config, models: { ...config.models, induce: custom } }),
    );
    const { service, asked } = bedrockLike();

    // Act
    const plan = await planBatch({ runId, stage: 'induce', shards }, { ...setup.deps, batch: service });

    // Assess
    expect(plan).toEqual({ stage: 'induce', mode: 'on-demand', jobs: [], onDemand: 0 });
    expect(JSON.parse(await setup.store.get(`runs/${runId}/batch/induce/plan.json`)).reason).toBe(
      `${custom} cannot run as a batch job here`,
    );
    expect(asked.submit).toEqual([]);
  });

  it('in mode auto, keeps a stage with fewer calls than batch.autoMinRecords on-demand', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 120, 40, {
      ...BATCH,
      mode: 'auto',
      batch: { autoMinRecords: 200 },
    });
    const deps = { ...setup.deps, batch: emulator(setup.deps, model) };

    // Act
    const plan = await planBatch({ runId: setup.runId, stage: 'induce', shards: setup.shards }, deps);

    // Assess
    expect(plan).toMatchObject({ mode: 'on-demand', jobs: [], onDemand: 120 });
    expect(JSON.parse(await setup.store.get(`runs/${setup.runId}/batch/induce/plan.json`)).reason).toBe(
      '120 calls, below batch.autoMinRecords (200)',
    );
  });

  it('leaves shards that failed at the stage before out of the plan', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 120, 40);
    const deps = { ...setup.deps, batch: emulator(setup.deps, model) };
    const [first, ...rest] = setup.shards;
    const shards = [{ shard: first as string, failed: true as const, error: 'ModelTransientError' }, ...rest];

    // Act
    const plan = await planBatch({ runId: setup.runId, stage: 'induce', shards }, deps);

    // Assess
    expect(plan).toMatchObject({ mode: 'on-demand', onDemand: 80 });
  });

  it('waits on a Bedrock job, and stops one still running when the wait is over, paying its records on-demand', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 120);
    const { runId, shards } = setup;
    const { service, asked } = bedrockLike();
    const deps = { ...setup.deps, batch: service };
    const plan = await planBatch({ runId, stage: 'induce', shards }, deps);
    const jobName = plan.jobs[0] as string;

    // Act
    const waiting = await submitBatchJob({ runId, stage: 'induce', jobName, taskToken: 't1' }, deps);
    const stats = await joinBatchJob({ runId, stage: 'induce', jobName }, deps);
    for (const shard of shards) await induce({ runId, shard }, deps);

    // Assess
    expect(waiting).toEqual({ jobName, status: 'Submitted' });
    expect(asked.stop).toEqual([jobName]);
    expect(stats).toMatchObject({ status: 'Stopped', records: 120, answered: 0, missing: 120 });
    expect(stats.message).toMatch(/still InProgress/);
    expect(model.calls).toHaveLength(120);
  });

  it('joins at once a Bedrock job that had already ended when it was submitted again', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 120);
    const { runId, shards } = setup;
    const probe = bedrockLike();
    const plan = await planBatch({ runId, stage: 'induce', shards }, { ...setup.deps, batch: probe.service });
    const jobName = plan.jobs[0] as string;
    const { service } = bedrockLike({ [jobName]: 'Failed' });

    // Act
    const submitted = await submitBatchJob(
      { runId, stage: 'induce', jobName, taskToken: 't2' },
      { ...setup.deps, batch: service },
    ).catch((error: Error) => error);

    // Assess
    expect(submitted).toMatchObject({ name: 'BatchJobEndedError' });
  });

  it('records why Bedrock refused a job and sends all its records on-demand', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 120);
    const { runId, shards } = setup;
    const { service } = bedrockLike();
    const refusing: BatchService = {
      ...service,
      submit: async () => {
        throw new BatchSubmitError('batch job x: ValidationException: model does not support batch');
      },
      state: async () => ({ status: 'NotSubmitted' }),
    };
    const deps = { ...setup.deps, batch: refusing };
    const plan = await planBatch({ runId, stage: 'induce', shards }, deps);
    const jobName = plan.jobs[0] as string;

    // Act
    const submitted = await submitBatchJob({ runId, stage: 'induce', jobName, taskToken: 't' }, deps).catch(
      (error: Error) => error,
    );
    const stats = await joinBatchJob({ runId, stage: 'induce', jobName }, deps);

    // Assess
    expect(submitted).toMatchObject({ name: 'BatchSubmitError' });
    expect(stats).toMatchObject({ status: 'NotSubmitted', answered: 0, missing: 120 });
    expect(stats.message).toMatch(/does not support batch/);
  });

  it('submits the very same job again after a crash mid-batch, paying on-demand only for the records the jobs failed', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 250, 50);
    const { runId, shards } = setup;
    const local = emulator(setup.deps, model, () => ({ errorRecordIds: new Set([recordIdOf(0)]) }));
    const submits: { jobName: string; token: string; input: string }[] = [];
    let crashed = false;
    const crashing: BatchService = {
      ...local,
      waitsForCallback: false,
      scope: local.scope,
      accepts: () => true,
      state: (job) => local.state(job),
      stop: async () => {},
      submit: async (job, token, calls) => {
        submits.push({ jobName: job.jobName, token: job.token, input: await setup.store.get(job.inputKey) });
        // The second job is submitted, then the process dies before its answers are read.
        if (submits.length === 2 && !crashed) {
          crashed = true;
          throw new Error('Lambda timed out');
        }
        return local.submit(job, token, calls);
      },
    };
    const deps = { ...setup.deps, batch: crashing };
    const prefill = () => prefillStage({ runId, stage: 'induce', shards }, deps);
    const failed = await prefill().catch((error: Error) => error);

    // Act
    const rerun = await prefill();

    // Assess
    expect(failed).toMatchObject({ message: 'Lambda timed out' });
    expect(submits).toHaveLength(3);
    expect(submits[2]).toEqual(submits[1]);
    expect(rerun.jobs.map((j) => [j.records, j.answered, j.errored])).toEqual([
      [125, 124, 1],
      [125, 124, 1],
    ]);
    const before = model.calls.length;
    for (const shard of shards) await induce({ runId, shard }, deps);
    expect(model.calls.length - before).toBe(2);
  });

  it('runs a job that ended only once: after a failed job, a rerun pays its records on-demand', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 120, 40);
    const { runId, shards } = setup;
    const deps = { ...setup.deps, batch: emulator(setup.deps, model, () => ({ status: 'Failed' })) };
    const first = await prefillStage({ runId, stage: 'induce', shards }, deps);
    const answeredByJob = model.calls.length;

    // Act
    const again = await prefillStage({ runId, stage: 'induce', shards }, deps);
    for (const shard of shards) await induce({ runId, shard }, deps);

    // Assess
    expect(first.jobs).toEqual([expect.objectContaining({ status: 'Failed', records: 120, answered: 0 })]);
    expect(again.jobs).toEqual(first.jobs);
    expect(
      await setup.store.tryGet(batchKey(runId, 'induce', first.jobs[0]?.jobName ?? '', 'stats.json')),
    ).toBeDefined();
    expect(model.calls.length - answeredByJob).toBe(120);
  });
});
