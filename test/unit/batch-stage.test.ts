import { describe, expect, it } from 'vitest';
import { recordIdOf } from '../../lib/pipeline/batch/batch-job.js';
import {
  type BatchLimits,
  type BatchRunner,
  batchKey,
  prefillStage,
} from '../../lib/pipeline/batch/batch-stage.js';
import { LocalBatchRunner } from '../../lib/pipeline/batch/local-runner.js';
import type { StageDeps } from '../../lib/pipeline/deps.js';
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

const WORDS = (
  'river mountain coffee window garden engine ticket winter market pencil silver thunder harbor violin ' +
  'basket candle orange planet rocket saddle tunnel velvet wallet yellow zipper anchor bridge castle ' +
  'dragon feather glacier hammer island jungle kettle ladder meadow needle oyster parrot quarry ribbon ' +
  'shadow tomato umbrella valley walnut lantern compass biscuit blanket cactus dolphin eclipse falcon'
).split(' ');

/** 320 texts of 14 words each, from a seeded generator: distinct enough to survive near-duplicate removal. */
function texts(count: number): string[] {
  let seed = 12345;
  const next = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed;
  };
  return Array.from({ length: count }, (_, i) => {
    const words = Array.from({ length: 14 }, () => WORDS[next() % WORDS.length]);
    return `Complaint ${i}: ${words.join(' ')}.`;
  });
}

const STAGES: Record<ModelStage, (task: ShardTask, deps: StageDeps) => Promise<ShardResult>> = {
  induce,
  filter,
  respond,
  evaluate,
};
const LIMITS: BatchLimits = { minRecordsPerJob: 100, maxRecordsPerJob: 150, maxJobs: 2, priceFactor: 0.5 };

/** `count` texts split into shards of `shardSize` with a call cache, their duplicates removed. */
async function splitTexts(model: FakeModel, count: number, shardSize = 40) {
  const setup = fakeDeps(model, { shardSize });
  const deps = { ...setup.deps, cache: new CallCache(new FsStore(tempDir())) };
  const body = texts(count)
    .map((text, i) => JSON.stringify({ id: `c${i}`, text }))
    .join('\n');
  const { runId, shards } = await putAndSplit(deps, 'complaints.jsonl', body);
  await dedupTexts({ runId }, deps);
  return { ...setup, deps, runId, shards };
}

/**
 * Runs the stages in pipeline order over one input, each model stage over every shard; with a batch
 * runner, each model stage is first prefilled by batch jobs, as the batch workflow does.
 */
async function runStages(model: FakeModel, runner?: (deps: StageDeps) => BatchRunner) {
  const setup = await splitTexts(model, 320);
  const { deps, runId, shards } = setup;
  const batch: Record<string, unknown> = {};
  const stage = async (name: ModelStage) => {
    if (runner)
      batch[name] = await prefillStage(
        { runId, stage: name, stageFunction: STAGES[name], shards, limits: LIMITS, runner: runner(deps) },
        deps,
      );
    for (const shard of shards) await STAGES[name]({ runId, shard }, deps);
  };
  await stage('induce');
  await dedupInstructions({ runId }, deps);
  for (const name of ['filter', 'respond', 'evaluate'] as const) await stage(name);
  const report = await merge({ runId, shardResults: [] }, deps);
  const pairs = await readJsonl<Pair>(setup.store, outputKey(runId, 'pairs.jsonl'));
  return { ...setup, deps, runId, pairs, report, batch };
}

describe('batch mode', () => {
  it('gives the same pairs as on-demand over 320 records, paying on-demand only for what batch left out', async () => {
    // Prepare
    const onDemandModel = new FakeModel();
    const batchModel = new FakeModel();
    const misbehaving = (deps: StageDeps) =>
      new LocalBatchRunner(deps.store, async () => new FakeModel(), {
        errorRecordIds: new Set([recordIdOf(3)]),
        dropRecordIds: new Set([recordIdOf(5)]),
      });

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
        jobs: [107, 107, 106].map((records) => ({
          records,
          answered: records - 2,
          errored: 1,
          missing: 1,
          status: 'PartiallyCompleted',
        })),
        onDemand: 0,
      });
    expect(batchModel.calls).toHaveLength(4 * 6);
    expect(onDemandModel.calls).toHaveLength(4 * 320);
  });

  it('keeps to on-demand a stage whose model is not a Bedrock Converse model', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 120);
    const { deps, runId, shards } = setup;
    const config = JSON.parse(await setup.store.get(configKey(runId)));
    await setup.store.put(
      configKey(runId),
      JSON.stringify({
        ...config,
        models: {
          ...config.models,
          induce: 'bedrock-custom:arn:aws:bedrock:us-east-1:123456789012:imported-model/x#llama',
        },
      }),
    );
    const runs: string[] = [];
    const runner: BatchRunner = {
      run: async (job) => {
        runs.push(job.jobName);
        return { status: 'Completed', output: [] };
      },
    };

    // Act
    const stats = await prefillStage(
      { runId, stage: 'induce', stageFunction: induce, shards, limits: LIMITS, runner },
      deps,
    );

    // Assess
    expect(stats).toEqual({ stage: 'induce', jobs: [], onDemand: 0 });
    expect(runs).toEqual([]);
  });

  it('keeps no stats of a job that has not ended, so its output is read once it has', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 120);
    const { deps, runId, shards } = setup;
    const running: BatchRunner = { run: async () => ({ status: 'InProgress', output: [] }) };
    const runs: string[] = [];
    const local = new LocalBatchRunner(deps.store, async () => model);
    const ending: BatchRunner = {
      run: (job) => {
        runs.push(job.jobName);
        return local.run(job);
      },
    };
    const prefill = (runner: BatchRunner) =>
      prefillStage({ runId, stage: 'induce', stageFunction: induce, shards, limits: LIMITS, runner }, deps);

    // Act
    const unfinished = await prefill(running).catch((error: Error) => error);
    const ended = await prefill(ending);

    // Assess
    expect(unfinished).toMatchObject({ name: 'ModelTransientError' });
    expect(runs).toHaveLength(1);
    expect(ended.jobs).toEqual([
      expect.objectContaining({ status: 'Completed', records: 120, answered: 120 }),
    ]);
  });

  it('submits the very same job again after a crash mid-batch, paying on-demand only for the records the jobs failed', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 250, 50);
    const { deps, runId, shards } = setup;
    const submits: { jobName: string; token: string; records: number }[] = [];
    const local = new LocalBatchRunner(deps.store, async () => model, {
      errorRecordIds: new Set([recordIdOf(0)]),
    });
    let crashed = false;
    const crashing: BatchRunner = {
      run: async (job) => {
        submits.push({ jobName: job.jobName, token: job.token, records: job.calls.size });
        // The second job is submitted, then the process dies before its answers are read.
        if (submits.length === 2 && !crashed) {
          crashed = true;
          throw new Error('Lambda timed out');
        }
        return local.run(job);
      },
    };
    const prefill = () =>
      prefillStage(
        { runId, stage: 'induce', stageFunction: induce, shards, limits: LIMITS, runner: crashing },
        deps,
      );
    const failed = await prefill().catch((error: Error) => error);

    // Act
    const rerun = await prefill();

    // Assess
    expect(failed).toMatchObject({ message: 'Lambda timed out' });
    expect(submits.map((s) => s.records)).toEqual([125, 125, 125]);
    expect(submits[2]).toEqual(submits[1]);
    expect(rerun.jobs.map((j) => [j.answered, j.errored])).toEqual([
      [124, 1],
      [124, 1],
    ]);
    expect(rerun.onDemand).toBe(0);
    const before = model.calls.length;
    for (const shard of shards) await induce({ runId, shard }, deps);
    expect(model.calls.length - before).toBe(2);
  });

  it('submits a job that ended only once: after a failed job, a rerun pays its records on-demand', async () => {
    // Prepare
    const model = new FakeModel();
    const setup = await splitTexts(model, 120, 40);
    const { deps, runId, shards } = setup;
    const runs: string[] = [];
    const failing: BatchRunner = {
      run: async (job) => {
        runs.push(job.jobName);
        return { status: 'Failed', output: [] };
      },
    };
    const prefill = () =>
      prefillStage(
        { runId, stage: 'induce', stageFunction: induce, shards, limits: LIMITS, runner: failing },
        deps,
      );
    const first = await prefill();

    // Act
    const again = await prefill();
    for (const shard of shards) await induce({ runId, shard }, deps);

    // Assess
    expect(first.jobs).toEqual([expect.objectContaining({ status: 'Failed', records: 120, answered: 0 })]);
    expect(runs).toHaveLength(1);
    expect(again.jobs).toEqual(first.jobs);
    expect(
      await setup.store.tryGet(batchKey(runId, 'induce', first.jobs[0]?.jobName ?? '', 'stats.json')),
    ).toBeDefined();
    expect(model.calls).toHaveLength(120);
  });
});
