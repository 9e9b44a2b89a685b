import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { batchKey, batchPlanKey } from '../../lib/pipeline/batch/batch-service.js';
import { Budget, spentBy, worstCaseUsd } from '../../lib/pipeline/budget.js';
import { BudgetExceededError } from '../../lib/pipeline/errors.js';
import { manifestKey, shardStatsKey } from '../../lib/pipeline/keys.js';
import { emptyStats } from '../../lib/pipeline/ledger.js';
import { CallCache } from '../../lib/pipeline/models/call-cache.js';
import { induce } from '../../lib/pipeline/stages/induce.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { FakeModel } from '../support/fake-model.js';
import { dedupTexts, fakeDeps, putAndSplit } from '../support/pipeline.js';
import { tempDir } from '../support/temp.js';

/** One dollar per 1,000 tokens in and out: a call's cost in dollars is its tokens / 1,000. */
const PRICE = { inputPer1k: 1, outputPer1k: 1 };
// Texts of one length, so that every call holds the same worst case, and far enough apart to pass dedup.
const texts = [
  'Everyone on this street is a liar and a thief',
  'My landlord should be run out of town tonight',
  'That referee deserves every insult he gets now',
  'The new coworker is the worst person I know of',
  'Our mayor lies about everything, all the time',
  'Those tourists ruin the beach for all of us!!!',
].map((t) => t.padEnd(48, '.'));
const body = texts.map((text, i) => JSON.stringify({ id: `t${i}`, text })).join('\n');

/** A fake whose every instruction is the same, so that every call costs the same. */
const fixedModel = () =>
  new FakeModel('bedrock:fake', { generate: () => 'Write a short post about your street.' });

/** Splits the texts into one shard priced at PRICE, ready for induce, with calls made one at a time. */
async function prepared(model = fixedModel(), cache?: CallCache) {
  const setup = fakeDeps(model, { prices: { 'bedrock:fake': PRICE }, callConcurrency: 1 });
  const { runId } = await putAndSplit(setup.deps, 'texts.jsonl', body);
  const task = { runId, shard: '00000' };
  await dedupTexts(task, setup.deps);
  return { ...setup, deps: { ...setup.deps, cache }, task };
}

describe('Budget', () => {
  it('refuses the reservation that would pass the limit, and keeps nothing of it', async () => {
    // Prepare
    const budget = new Budget(1);
    (await budget.reserve(0.6)).settle(0.5);

    // Act
    const refused = budget.reserve(0.6);

    // Assess
    await expect(refused).rejects.toThrow(BudgetExceededError);
    expect(budget.heldUsd).toBe(0);
    expect(await budget.reserve(0.5)).toBeDefined();
  });

  it('waits for a call in flight to settle instead of refusing while what is spent leaves room', async () => {
    // Prepare
    const budget = new Budget(1);
    const first = await budget.reserve(0.8);

    // Act
    const second = budget.reserve(0.5);
    first.settle(0.3);

    // Assess
    expect(await second).toBeDefined();
    expect(budget.heldUsd).toBeCloseTo(0.5, 12);
  });

  it('counts what a settled call cost and nothing of a released one', async () => {
    // Prepare
    const budget = new Budget(10, 2);

    // Act
    (await budget.reserve(1)).settle(0.25);
    const released = await budget.reserve(3);
    released.release();
    released.settle(3);

    // Assess
    expect(budget.spentUsd).toBeCloseTo(2.25, 12);
    expect(budget.heldUsd).toBe(0);
  });

  it('never refuses a call that cannot cost anything', async () => {
    // Prepare
    const budget = new Budget(0);

    // Act
    const hold = await budget.reserve(0);

    // Assess
    expect(hold).toBeDefined();
    await expect(budget.reserve(0.0001)).rejects.toThrow(BudgetExceededError);
  });

  it('never lets concurrent reservations hold or spend more than the limit', async () => {
    // Prepare
    const budget = new Budget(1);
    let most = 0;
    const call = async (i: number) => {
      const hold = await budget.reserve(0.1);
      most = Math.max(most, budget.spentUsd + budget.heldUsd);
      await new Promise((r) => setTimeout(r, (i * 7) % 13));
      hold.settle(0.07);
      most = Math.max(most, budget.spentUsd + budget.heldUsd);
    };

    // Act
    const outcomes = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => call(i)));

    // Assess
    const refused = outcomes.filter((o) => o.status === 'rejected');
    expect(refused.length).toBeGreaterThan(0);
    for (const o of refused) expect((o as PromiseRejectedResult).reason).toBeInstanceOf(BudgetExceededError);
    expect(most).toBeLessThanOrEqual(1 + 1e-9);
    expect(budget.spentUsd).toBeLessThanOrEqual(1);
    expect(budget.heldUsd).toBeCloseTo(0, 12);
  });

  it('rejects a limit that is not a dollar amount', () => {
    expect(() => new Budget(-1)).toThrow(RangeError);
    expect(() => new Budget(Number.NaN)).toThrow(RangeError);
  });
});

describe('worstCaseUsd', () => {
  it('prices every byte of the prompt as a token and every token the call may write', () => {
    // Prepare
    const request = { system: 'abcd', prompt: 'é'.repeat(3), maxTokens: 100, temperature: 0 };

    // Act
    const worst = worstCaseUsd(request, { inputPer1k: 1, outputPer1k: 2 });

    // Assess
    // 4 + 6 bytes in at $1 per 1,000, 100 tokens out at $2 per 1,000.
    expect(worst).toBeCloseTo((10 * 1 + 100 * 2) / 1000, 12);
  });

  it('counts a judge tool schema as input', () => {
    // Prepare
    const generate = { system: 's', prompt: 'p', maxTokens: 10, temperature: 0 };
    const judge = {
      ...generate,
      schema: z.object({ score: z.number() }),
      toolName: 't',
      toolDescription: 'd',
    };

    // Assess
    expect(worstCaseUsd(judge, PRICE)).toBeGreaterThan(worstCaseUsd(generate, PRICE));
  });

  it('is nothing for a free model', () => {
    expect(
      worstCaseUsd(
        { system: 's', prompt: 'p', maxTokens: 10, temperature: 0 },
        { inputPer1k: 0, outputPer1k: 0 },
      ),
    ).toBe(0);
  });
});

describe('a shard stage with a budget', () => {
  it('throws BudgetExceededError before making the call that would cross the limit', async () => {
    // Prepare
    const model = fixedModel();
    const { deps, task, store } = await prepared(model);
    // Every call here holds `worst` and costs `paid`: after two calls, a third no longer fits.
    const { worst, paid } = await measureCalls();
    const budget = new Budget(2 * paid + worst - 1e-6);

    // Act
    const run = induce(task, { ...deps, budget });

    // Assess
    await expect(run).rejects.toThrow(BudgetExceededError);
    expect(model.calls).toHaveLength(2);
    expect(budget.spentUsd).toBeCloseTo(2 * paid, 12);
    expect(budget.heldUsd).toBe(0);
    // The stage did not finish: its stats, and what they record as paid, do not exist yet.
    expect(await store.tryGet(shardStatsKey(task.runId, task.shard, 'induce'))).toBeUndefined();
    expect(await spentBy(store, task.runId)).toBe(0);
  });

  it('answers cached calls whatever is left of the budget', async () => {
    // Prepare
    const cache = new CallCache(new FsStore(tempDir()));
    const first = await prepared(fixedModel(), cache);
    await induce(first.task, first.deps);
    const model = fixedModel();
    const again = await prepared(model, cache);

    // Act
    const result = await induce(again.task, { ...again.deps, budget: new Budget(0) });

    // Assess
    expect(result.records).toBe(texts.length);
    expect(model.calls).toHaveLength(0);
  });

  it('lets calls in flight settle before refusing, and never spends past the limit', async () => {
    // Prepare
    const model = fixedModel();
    const setup = fakeDeps(model, { prices: { 'bedrock:fake': PRICE }, callConcurrency: 8 });
    const { runId } = await putAndSplit(setup.deps, 'texts.jsonl', body);
    const task = { runId, shard: '00000' };
    await dedupTexts(task, setup.deps);
    const { worst, paid } = await measureCalls();
    // Room for two calls' cost and one worst case: of the six calls sent together, three are made.
    const limit = 2 * paid + worst + 1e-6;
    const budget = new Budget(limit);

    // Act
    const run = induce(task, { ...setup.deps, budget });

    // Assess
    await expect(run).rejects.toThrow(BudgetExceededError);
    expect(model.calls).toHaveLength(3);
    expect(budget.spentUsd).toBeCloseTo(3 * paid, 12);
    expect(budget.spentUsd).toBeLessThanOrEqual(limit);
    expect(budget.heldUsd).toBe(0);
  });
});

describe('Budget.forRun', () => {
  it('starts from what the run recorded: finished stages and batch jobs', async () => {
    // Prepare
    const store = new FsStore(tempDir());
    const runId = 'run-1';
    const manifest = {
      runId,
      executionId: 'e',
      inputKey: 'incoming/x.jsonl',
      etag: null,
      startedAt: '2026-01-01T00:00:00Z',
      shards: [
        { shard: '00000', records: 1 },
        { shard: '00001', records: 1 },
      ],
      records: 2,
      rejected: 0,
    };
    await store.put(manifestKey(runId), JSON.stringify(manifest));
    await store.put(
      shardStatsKey(runId, '00000', 'induce'),
      JSON.stringify({ ...emptyStats(), costUsd: 0.5 }),
    );
    await store.put(
      shardStatsKey(runId, '00000', 'filter'),
      JSON.stringify({ ...emptyStats(), costUsd: 0.25 }),
    );
    const plan = {
      stage: 'respond',
      mode: 'batch',
      calls: 2,
      jobs: [{ jobName: 'job-1', records: 2 }],
      onDemand: 0,
    };
    await store.put(batchPlanKey(runId, 'respond'), JSON.stringify(plan));
    const jobStats = {
      jobName: 'job-1',
      status: 'Completed',
      records: 2,
      answered: 2,
      errored: 0,
      missing: 0,
      inputTokens: 10,
      outputTokens: 10,
      costUsd: 0.0625,
    };
    await store.put(batchKey(runId, 'respond', 'job-1', 'stats.json'), JSON.stringify(jobStats));

    // Act
    const budget = await Budget.forRun(store, runId, 2);

    // Assess
    expect(budget.spentUsd).toBeCloseTo(0.5 + 0.25 + 0.0625, 12);
    expect(budget.limitUsd).toBe(2);
  });

  it('commits the worst case of a call before it is made, so a run killed during it resumes from at least what it paid', async () => {
    // Prepare
    const store = new FsStore(tempDir());
    const first = await Budget.forRun(store, 'run-2', 10);
    (await first.reserve(1)).settle(0.25);
    await first.reserve(2);

    // Act
    // The process dies here, with the second call in flight.
    const resumed = await Budget.forRun(store, 'run-2', 10);

    // Assess
    expect(resumed.spentUsd).toBeCloseTo(2.25, 12);
  });

  it('adds up what every earlier attempt committed', async () => {
    // Prepare
    const store = new FsStore(tempDir());
    const first = await Budget.forRun(store, 'run-3', 10);
    (await first.reserve(1)).settle(0.5);
    // One attempt at a time: the first has ended, and written what it settled, before the next starts.
    await new Promise((r) => setTimeout(r, 10));
    const second = await Budget.forRun(store, 'run-3', 10);
    (await second.reserve(1)).settle(0.25);
    await new Promise((r) => setTimeout(r, 10));

    // Act
    const third = await Budget.forRun(store, 'run-3', 10);

    // Assess
    expect(third.spentUsd).toBeCloseTo(0.75, 12);
  });

  it('starts from nothing for a run whose split never finished', async () => {
    expect((await Budget.forRun(new FsStore(tempDir()), 'nope', 1)).spentUsd).toBe(0);
  });
});

/** What each induce call of a prepared shard holds (they are all alike) and what it costs, measured on a shard of its own. */
async function measureCalls(): Promise<{ worst: number; paid: number }> {
  const { deps, task } = await prepared();
  const recorder = new Budget(1e9);
  const holds = new Set<number>();
  const spy = {
    reserve: (usd: number) => {
      holds.add(usd);
      return recorder.reserve(usd);
    },
  } as unknown as Budget;
  await induce(task, { ...deps, budget: spy });
  expect(holds.size).toBe(1);
  return { worst: [...holds][0] as number, paid: recorder.spentUsd / texts.length };
}
