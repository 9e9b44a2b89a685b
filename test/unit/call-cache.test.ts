import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ModelRefusedError, ModelThrottledError, ModelTransientError } from '../../lib/pipeline/errors.js';
import { shardKey, shardRejectsKey, shardStatsKey } from '../../lib/pipeline/keys.js';
import { CallCache, callKey } from '../../lib/pipeline/models/call-cache.js';
import { GovernorPool } from '../../lib/pipeline/models/governor-pool.js';
import type { GenerateRequest } from '../../lib/pipeline/models/model-client.js';
import type { Reject, StageStats } from '../../lib/pipeline/schemas.js';
import { evaluate } from '../../lib/pipeline/stages/evaluate.js';
import { filter } from '../../lib/pipeline/stages/filter.js';
import { induce } from '../../lib/pipeline/stages/induce.js';
import { respond } from '../../lib/pipeline/stages/respond.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { FakeModel } from '../support/fake-model.js';
import {
  dedupInstructions,
  dedupTexts,
  fakeDeps,
  putAndSplit,
  readJsonl,
  type TestDeps,
} from '../support/pipeline.js';
import { tempDir } from '../support/temp.js';

const request: GenerateRequest = { system: 'Be brief.', prompt: 'Say hi.', maxTokens: 64, temperature: 0 };
const identity = { spec: 'bedrock:m', request, templateHash: 'abc', attempt: 0 };

describe('callKey', () => {
  it('gives equal requests the same key whatever the order of their fields', () => {
    const reordered = { temperature: 0, maxTokens: 64, prompt: 'Say hi.', system: 'Be brief.' };

    expect(callKey({ ...identity, request: reordered })).toBe(callKey(identity));
  });

  it('changes with the model, prompt, inference parameters, template, attempt and answer schema', () => {
    const judge = {
      ...request,
      schema: z.object({ score: z.number() }),
      toolName: 't',
      toolDescription: 'd',
    };
    const variants = [
      callKey({ ...identity, spec: 'bedrock:other' }),
      callKey({ ...identity, request: { ...request, prompt: 'Say hello.' } }),
      callKey({ ...identity, request: { ...request, system: 'Be long.' } }),
      callKey({ ...identity, request: { ...request, temperature: 0.7 } }),
      callKey({ ...identity, request: { ...request, maxTokens: 65 } }),
      callKey({ ...identity, templateHash: 'abd' }),
      callKey({ ...identity, attempt: 1 }),
      callKey({ ...identity, request: judge }),
      callKey({ ...identity, request: { ...judge, schema: z.object({ score: z.string() }) } }),
    ];

    expect(new Set([callKey(identity), ...variants]).size).toBe(variants.length + 1);
  });
});

describe('CallCache', () => {
  it('treats an unreadable entry as absent', async () => {
    const store = new FsStore(tempDir());
    const cache = new CallCache(store);
    const key = callKey(identity);
    await store.put(cache.keyOf(key), '{"kind":"text"');

    expect(await cache.get(key)).toBeUndefined();
  });
});

const texts = ['You people are vermin.', 'Everyone from that town is a thief.', 'I hope you get hurt.'];
const body = texts.map((text, i) => JSON.stringify({ id: `t${i}`, text })).join('\n');
const STAGES = [dedupTexts, induce, dedupInstructions, filter, respond, evaluate];
let executions = 0;

/** Runs every stage over shard 00000 of a fresh store, with the given cache and model. */
async function runAll(cache: CallCache | undefined, model: FakeModel, overrides = {}) {
  const setup = fakeDeps(model, overrides);
  const deps: TestDeps = { ...setup.deps, cache };
  const { runId } = await putAndSplit(deps, 'texts.jsonl', body, `exec-${++executions}`);
  const task = { runId, shard: '00000' };
  for (const stage of STAGES) await stage(task, deps);
  const stats = async (stage: string) =>
    JSON.parse(await setup.store.get(shardStatsKey(runId, '00000', stage as 'induce'))) as StageStats;
  return { ...setup, deps, task, stats };
}

describe('model stages with a call cache', () => {
  it('make no model call when every answer is cached, and write the same records', async () => {
    const cache = new CallCache(new FsStore(tempDir()));
    const first = await runAll(cache, new FakeModel());
    const model = new FakeModel();

    const second = await runAll(cache, model);

    expect(model.calls).toHaveLength(0);
    expect(await second.store.get(shardKey(second.task.runId, '00000', 'evaluate'))).toBe(
      await first.store.get(shardKey(first.task.runId, '00000', 'evaluate')),
    );
    expect(await second.stats('filter')).toMatchObject({ calls: 0, cacheHits: 3, cacheMisses: 0 });
    expect(await first.stats('filter')).toMatchObject({ calls: 3, cacheHits: 0, cacheMisses: 3 });
  });

  it('pay only for the stage whose prompt changed', async () => {
    const cache = new CallCache(new FsStore(tempDir()));
    await runAll(cache, new FakeModel());
    const model = new FakeModel();

    const rerun = await runAll(cache, model, {
      stages: { evaluate: { criteria: 'The preferred response is short and kind.' } },
    });

    expect(new Set(model.calls.map((c) => c.kind))).toEqual(new Set(['judge']));
    expect(model.calls).toHaveLength(3);
    expect(await rerun.stats('respond')).toMatchObject({ calls: 0, cacheHits: 3 });
    expect(await rerun.stats('evaluate')).toMatchObject({ calls: 3, cacheMisses: 3 });
  });

  it('keep an invalid judge answer and its retry, so a rerun rejects the same without paying', async () => {
    const cache = new CallCache(new FsStore(tempDir()));
    const offSchema = () => ({ score: 'high' });
    const first = await runAll(cache, new FakeModel('bedrock:fake', { judge: offSchema }));
    const model = new FakeModel('bedrock:fake', { judge: offSchema });

    const rerun = await runAll(cache, model);

    const rejects = await readJsonl<Reject>(
      rerun.store,
      shardRejectsKey(rerun.task.runId, '00000', 'filter'),
    );
    expect(model.calls).toHaveLength(0);
    expect(rejects.map((r) => r.reason)).toEqual(Array(3).fill('invalid-judge-answer'));
    expect(await first.stats('filter')).toMatchObject({ calls: 6, cacheMisses: 6 });
  });

  it('keep a refusal, so a rerun rejects the record without asking again', async () => {
    const cache = new CallCache(new FsStore(tempDir()));
    const refuse = (req: GenerateRequest) => {
      if (req.prompt.includes('thief'))
        throw new ModelRefusedError('content_filtered', { inputTokens: 9, outputTokens: 0 });
      return 'Write a post.';
    };
    await runAll(cache, new FakeModel('bedrock:fake', { generate: refuse }));
    const model = new FakeModel('bedrock:fake', { generate: refuse });

    const rerun = await runAll(cache, model);

    const rejects = await readJsonl<Reject>(
      rerun.store,
      shardRejectsKey(rerun.task.runId, '00000', 'induce'),
    );
    expect(rejects.map((r) => [r.id, r.reason])).toEqual([['t1', 'model-refused']]);
    expect(
      model.calls.filter((c) => c.kind === 'generate' && c.request.prompt.includes('thief')),
    ).toHaveLength(0);
  });

  it('wait for the calls in flight when one fails the shard, so the retry pays for none of them again', async () => {
    const cache = new CallCache(new FsStore(tempDir()));
    const setup = fakeDeps(new FakeModel(), { callConcurrency: 3 });
    const { runId } = await putAndSplit(setup.deps, 'texts.jsonl', body);
    await dedupTexts({ runId }, setup.deps);
    const task = { runId, shard: '00000' };
    const flaky = new FakeModel('bedrock:fake', {
      generate: async (req) => {
        if (req.prompt.includes('vermin')) throw new ModelTransientError('503 from the endpoint');
        await new Promise((resolve) => setTimeout(resolve, 20));
        return 'Write a post.';
      },
    });
    await expect(induce(task, { ...setup.deps, cache, models: { get: async () => flaky } })).rejects.toThrow(
      ModelTransientError,
    );
    const retryModel = new FakeModel();

    await induce(task, { ...setup.deps, cache, models: { get: async () => retryModel } });

    expect(retryModel.calls.map((c) => c.request.prompt).filter((p) => p.includes('vermin'))).toHaveLength(1);
    expect(retryModel.calls).toHaveLength(1);
  });

  it('have cached each answer before a later call failed the shard, so the retry pays only for the rest', async () => {
    const cache = new CallCache(new FsStore(tempDir()));
    const setup = fakeDeps(new FakeModel(), { callConcurrency: 1 });
    const { runId } = await putAndSplit(setup.deps, 'texts.jsonl', body);
    await dedupTexts({ runId }, setup.deps);
    const task = { runId, shard: '00000' };
    let calls = 0;
    const flaky = new FakeModel('bedrock:fake', {
      generate: () => {
        if (++calls === 3) throw new ModelTransientError('503 from the endpoint');
        return 'Write a post.';
      },
    });
    await expect(induce(task, { ...setup.deps, cache, models: { get: async () => flaky } })).rejects.toThrow(
      ModelTransientError,
    );
    const retryModel = new FakeModel();

    await induce(task, { ...setup.deps, cache, models: { get: async () => retryModel } });

    expect(retryModel.calls).toHaveLength(1);
    // The two answers the failed attempt paid for are read back, and counted as paid, once.
    expect(JSON.parse(await setup.store.get(shardStatsKey(runId, '00000', 'induce')))).toMatchObject({
      calls: 3,
      cacheHits: 2,
      cacheMisses: 1,
    });
  });
});

describe('a resumed model stage', () => {
  it('skips a shard whose stage already wrote its stats', async () => {
    const { deps, task } = await runAll(undefined, new FakeModel());
    const model = new FakeModel();

    const result = await filter(task, { ...deps, models: { get: async () => model } });

    expect(model.calls).toHaveLength(0);
    expect(result.records).toBe(3);
  });
});

describe('a governed model stage', () => {
  it('retries throttled calls and counts the throttles and retries in the stats', async () => {
    let n = 0;
    const throttling = new FakeModel('bedrock:fake', {
      generate: () => {
        if (n++ % 2 === 0) throw new ModelThrottledError('429 ThrottlingException');
        return 'Write a post.';
      },
    });
    const setup = fakeDeps(throttling, { retry: { baseDelayMs: 1, maxDelayMs: 2 } });
    const deps = { ...setup.deps, governors: new GovernorPool({ sharedByShards: true }) };
    const { runId } = await putAndSplit(deps, 'texts.jsonl', body);
    await dedupTexts({ runId }, deps);

    const result = await induce({ runId, shard: '00000' }, deps);

    const stats = JSON.parse(await setup.store.get(shardStatsKey(runId, '00000', 'induce'))) as StageStats;
    expect(result.records).toBe(3);
    expect(stats).toMatchObject({ calls: 3, throttled: 3, retries: 3 });
  });
});
