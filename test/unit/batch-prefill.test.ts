import { describe, expect, it } from 'vitest';
import { batchInput, joinBatchOutput, recordIdOf } from '../../lib/pipeline/batch/batch-job.js';
import { emulateBatchJob } from '../../lib/pipeline/batch/emulator.js';
import { cacheBatchAnswers, collectStageCalls } from '../../lib/pipeline/batch/prefill.js';
import { shardKey, shardStatsKey } from '../../lib/pipeline/keys.js';
import { CallCache } from '../../lib/pipeline/models/call-cache.js';
import type { ConverseBody, ConverseResponse } from '../../lib/pipeline/models/converse-body.js';
import type { StageStats } from '../../lib/pipeline/schemas.js';
import { induce } from '../../lib/pipeline/stages/induce.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { FakeModel } from '../support/fake-model.js';
import { dedupTexts, fakeDeps, putAndSplit } from '../support/pipeline.js';
import { tempDir } from '../support/temp.js';

const texts = [
  'My neighbours play drums until three in the morning and I want them gone.',
  'The bus driver skipped my stop again today, absolutely useless service.',
  'Whoever keeps stealing my lunch from the office fridge should be ashamed.',
  'That referee should never be allowed near a football pitch ever again.',
  'Landlords who ignore broken heating in winter are the worst kind of people.',
  'People who talk loudly on the phone in quiet train carriages drive me mad.',
  'My cousin borrowed my car and returned it with an empty tank, typical.',
  'The new manager changed every process and now nothing works at all.',
  'Cyclists who ride on the pavement nearly knocked my grandmother over.',
  'The restaurant charged us for water and then forgot half of our order.',
  'Spam callers phoning at dinner time every single evening need stopping.',
  'Our team lost the final because the coach picked his favourites again.',
];
const body = texts.map((text, i) => JSON.stringify({ id: `t${i}`, text })).join('\n');

/** A run split into shards of 5, its texts deduplicated, with a call cache. */
async function splitRun(model: FakeModel) {
  const setup = fakeDeps(model, { shardSize: 5 });
  const deps = { ...setup.deps, cache: new CallCache(new FsStore(tempDir())) };
  const { runId, shards } = await putAndSplit(deps, 'texts.jsonl', body);
  await dedupTexts({ runId }, deps);
  return { ...setup, deps, runId, tasks: shards.map((shard) => ({ runId, shard })) };
}

/** The fake model behind the emulated job: the same answers on-demand gives. */
const respondWith =
  (model: FakeModel) =>
  async (input: ConverseBody): Promise<ConverseResponse> => {
    const request = {
      system: input.system?.[0]?.text ?? '',
      prompt: input.messages[0]?.content[0]?.text ?? '',
      maxTokens: input.inferenceConfig.maxTokens,
      temperature: input.inferenceConfig.temperature,
    };
    const { text, usage } = await model.generate(request);
    return { output: { message: { content: [{ text }] } }, stopReason: 'end_turn', usage };
  };

describe('a model stage prefilled by a batch job', () => {
  it('collects every call the cache cannot answer, across shards, paying and writing nothing', async () => {
    // Prepare
    const model = new FakeModel();
    const { deps, store, tasks, runId } = await splitRun(model);

    // Act
    const calls = await collectStageCalls(induce, tasks, deps);

    // Assess
    expect(tasks).toHaveLength(3);
    expect(calls).toHaveLength(12);
    expect(new Set(calls.map((c) => c.key)).size).toBe(12);
    expect(model.calls).toHaveLength(0);
    for (const task of tasks)
      expect(await store.tryGet(shardStatsKey(runId, task.shard, 'induce'))).toBeUndefined();
  });

  it('writes the same records as on-demand, paying on-demand only for what the job left out or failed', async () => {
    // Prepare
    const batchModel = new FakeModel();
    const batchRun = await splitRun(batchModel);
    const onDemandRun = await splitRun(new FakeModel());
    const calls = await collectStageCalls(induce, batchRun.tasks, batchRun.deps);
    const { jsonl, calls: byRecord } = batchInput(calls);
    const job = await emulateBatchJob(jsonl, respondWith(new FakeModel()), {
      seed: 'any order',
      errorRecordIds: new Set([recordIdOf(2)]),
      dropRecordIds: new Set([recordIdOf(7)]),
    });
    const join = await joinBatchOutput(job.output.split('\n'), byRecord, 'bedrock:fake');
    await cacheBatchAnswers(join, batchRun.deps.cache, 'job-0');

    // Act
    for (const task of batchRun.tasks) await induce(task, batchRun.deps);
    for (const task of onDemandRun.tasks) await induce(task, onDemandRun.deps);

    // Assess
    expect(job.status).toBe('PartiallyCompleted');
    expect(join.answers.size).toBe(10);
    for (const task of batchRun.tasks)
      expect(await batchRun.store.get(shardKey(batchRun.runId, task.shard, 'induce'))).toBe(
        await onDemandRun.store.get(shardKey(onDemandRun.runId, task.shard, 'induce')),
      );
    const stats = await Promise.all(
      batchRun.tasks.map(
        async (t) =>
          JSON.parse(
            await batchRun.store.get(shardStatsKey(batchRun.runId, t.shard, 'induce')),
          ) as StageStats,
      ),
    );
    expect(stats.reduce((n, s) => n + s.calls, 0)).toBe(2);
    expect(stats.reduce((n, s) => n + s.cacheHits, 0)).toBe(10);
    expect(batchModel.calls).toHaveLength(2);
  });
});
