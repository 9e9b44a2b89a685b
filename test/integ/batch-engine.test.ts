import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type ProgressEvent, runLocal } from '../../lib/local/run-local.js';
import { recordIdOf } from '../../lib/pipeline/batch/batch-job.js';
import { LocalBatchService } from '../../lib/pipeline/batch/local-batch.js';
import type { PipelineConfigInput } from '../../lib/pipeline/config.js';
import { ModelConfigError } from '../../lib/pipeline/errors.js';
import { CallCache } from '../../lib/pipeline/models/call-cache.js';
import type { Pair } from '../../lib/pipeline/schemas.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { FakeModel, fakeRegistry } from '../support/fake-model.js';
import { fakeConfig } from '../support/pipeline.js';
import { readJsonlFile, tempDir } from '../support/temp.js';
import { texts } from '../support/texts.js';

/** 320 distinct complaints as a JSONL input file. */
function input(count = 320): string {
  const path = join(tempDir(), 'complaints.jsonl');
  writeFileSync(
    path,
    texts(count)
      .map((text, i) => `${JSON.stringify({ id: `c${i}`, text })}\n`)
      .join(''),
  );
  return path;
}

const BATCH: PipelineConfigInput = {
  mode: 'batch',
  shardSize: 40,
  batch: { minRecordsPerJob: 100, maxRecordsPerJob: 150, maxJobs: 2 },
};

/** Runs the synthesized definition locally over `path` with one fake model and a fresh call cache. */
async function run(
  path: string,
  model: FakeModel,
  overrides: PipelineConfigInput,
  batch?: LocalBatchService,
) {
  const outDir = tempDir();
  const events: ProgressEvent[] = [];
  await runLocal({
    input: path,
    outDir,
    config: fakeConfig(overrides),
    registry: fakeRegistry(model),
    cache: new CallCache(new FsStore(tempDir())),
    retryIntervalMs: 0,
    onProgress: (event) => events.push(event),
    batch,
  });
  const pairs = readJsonlFile<Pair>(join(outDir, 'pairs.jsonl'));
  const report = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));
  return { outDir, pairs, report, events };
}

const strip = (pairs: Pair[]) =>
  pairs.map(({ id, prompt, chosen, rejected }) => ({ id, prompt, chosen, rejected }));

describe('the local engine in batch mode', () => {
  it('gives the same pairs as on-demand over 320 records, answering them with emulated batch jobs', async () => {
    // Prepare
    const path = input();
    const onDemandModel = new FakeModel();
    const batchModel = new FakeModel();

    // Act
    const prices = { 'bedrock:fake': { inputPer1k: 0.001, outputPer1k: 0.002 } };
    const onDemand = await run(path, onDemandModel, { shardSize: 40, prices });
    const batch = await run(path, batchModel, { ...BATCH, prices });

    // Assess
    expect(onDemand.pairs.length).toBeGreaterThanOrEqual(300);
    expect(strip(batch.pairs)).toEqual(strip(onDemand.pairs));
    // The emulator answers every record with the stage's model; the stages then find every answer cached.
    expect(batchModel.calls).toHaveLength(onDemandModel.calls.length);
    expect(batch.report.mode).toBe('batch');
    expect(batch.report.modes['on-demand'].calls).toBe(0);
    expect(batch.report.modes.batch).toMatchObject({ jobs: 12, records: 4 * 320, calls: 4 * 320 });
    expect(onDemand.report.modes.batch).toMatchObject({ jobs: 0, calls: 0 });
    for (const stage of ['induce', 'filter', 'respond', 'evaluate'])
      expect(batch.report.batch[stage]).toMatchObject({ mode: 'batch', calls: 320, onDemand: 0 });
    // Emulated jobs were answered by on-demand calls, and are priced as what they cost.
    expect(batch.report.modes.batch.costUsd).toBeGreaterThan(0);
    expect(batch.report.modes.batch.costUsd).toBeCloseTo(onDemand.report.modes['on-demand'].costUsd, 10);
    expect(batch.report.batch.induce.jobs.every((j: { emulated?: boolean }) => j.emulated)).toBe(true);
    expect(batch.report.totals.calls).toBe(onDemand.report.totals.calls);
    expect(batch.events.filter((e) => e.type === 'stage' && e.stage === 'batch-join')).toHaveLength(12);
  });

  it('pays on-demand for the records a job errored on or left out, and for the jobs that failed', async () => {
    // Prepare
    const path = input();
    const onDemand = await run(path, new FakeModel(), { shardSize: 40 });
    const model = new FakeModel();
    const outDir = tempDir();
    let jobs = 0;
    const emulator = new LocalBatchService(
      new FsStore(join(outDir, 'store')),
      async () => model,
      () => {
        jobs++;
        // Every fourth job fails outright; the others error on one record and leave out another.
        return jobs % 4 === 0
          ? { status: 'Failed' as const }
          : { errorRecordIds: new Set([recordIdOf(3)]), dropRecordIds: new Set([recordIdOf(5)]) };
      },
    );

    // Act
    const batch = await runLocal({
      input: path,
      outDir,
      config: fakeConfig(BATCH),
      registry: fakeRegistry(model),
      cache: new CallCache(new FsStore(tempDir())),
      retryIntervalMs: 0,
      batch: emulator,
    });

    // Assess
    const pairs = readJsonlFile<Pair>(join(outDir, 'pairs.jsonl'));
    const report = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));
    expect(batch.pairs).toBe(onDemand.pairs.length);
    expect(strip(pairs)).toEqual(strip(onDemand.pairs));
    const all = Object.values(report.batch).flatMap(
      (stage) => (stage as { jobs: { status: string }[] }).jobs,
    );
    expect(all.map((j) => j.status).sort()).toEqual(
      [...Array(9).fill('PartiallyCompleted'), ...Array(3).fill('Failed')].sort(),
    );
    const failedRecords = all
      .filter((j) => j.status === 'Failed')
      .reduce((sum, j) => sum + (j as unknown as { records: number }).records, 0);
    expect(report.modes['on-demand'].calls).toBe(9 * 2 + failedRecords);
    expect(report.modes.batch.calls).toBe(4 * 320 - 9 * 2 - failedRecords);
  });

  it('resumes a run that stopped after its first jobs, without running any job again', async () => {
    // Prepare
    const path = input();
    const onDemand = await run(path, new FakeModel(), { shardSize: 40 });
    const outDir = tempDir();
    const submitted: string[] = [];
    const answering = new FakeModel();
    const local = new LocalBatchService(
      new FsStore(join(outDir, 'store')),
      async () => answering,
      () => ({ errorRecordIds: new Set([recordIdOf(7)]) }),
    );
    const emulator = Object.assign(Object.create(local) as LocalBatchService, {
      submit: (...args: Parameters<LocalBatchService['submit']>) => {
        submitted.push(args[0].jobName);
        return local.submit(...args);
      },
    });
    const denied = new FakeModel('bedrock:fake', {
      generate: () => {
        throw new ModelConfigError('bedrock:fake: AccessDeniedException');
      },
    });
    const cache = new CallCache(new FsStore(tempDir()));
    const options = { outDir, cache, retryIntervalMs: 0, batch: emulator };
    const stopped = await runLocal({
      ...options,
      input: path,
      config: fakeConfig(BATCH),
      registry: fakeRegistry(denied),
    }).catch((error: Error) => error);
    const runId = readdirSync(join(outDir, 'store', 'runs'))[0] as string;
    const before = { submitted: submitted.length, answered: answering.calls.length };

    // Act
    await runLocal({
      ...options,
      resume: runId,
      config: fakeConfig(BATCH),
      registry: fakeRegistry(new FakeModel()),
    });

    // Assess
    // The induce jobs ran, then the on-demand call for the record they errored on was denied.
    expect(stopped).toMatchObject({ name: 'ModelConfigError' });
    expect(before.submitted).toBe(3);
    expect(new Set(submitted).size).toBe(submitted.length);
    expect(submitted).toHaveLength(12);
    // Only the jobs of the three later stages ran now: 320 records a stage, one erroring in each of 3 jobs.
    expect(answering.calls.length - before.answered).toBe(3 * (320 - 3));
    expect(strip(readJsonlFile<Pair>(join(outDir, 'pairs.jsonl')))).toEqual(strip(onDemand.pairs));
  });
});
