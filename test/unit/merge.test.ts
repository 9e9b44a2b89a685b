import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import {
  type BatchJobStats,
  type BatchPlan,
  batchKey,
  batchPlanKey,
} from '../../lib/pipeline/batch/batch-service.js';
import { AccountingError } from '../../lib/pipeline/errors.js';
import { EXPORT_FORMATS } from '../../lib/pipeline/export/formats.js';
import { readParquetRows } from '../../lib/pipeline/export/parquet.js';
import { outputKey, shardKey } from '../../lib/pipeline/keys.js';
import { infraCostOf, PRICE_TABLE } from '../../lib/pipeline/prices.js';
import { MODEL_STAGES, type Pair, type Reject, type StageStats } from '../../lib/pipeline/schemas.js';
import { evaluate } from '../../lib/pipeline/stages/evaluate.js';
import { filter } from '../../lib/pipeline/stages/filter.js';
import { induce } from '../../lib/pipeline/stages/induce.js';
import { merge } from '../../lib/pipeline/stages/merge.js';
import { respond } from '../../lib/pipeline/stages/respond.js';
import { FakeModel } from '../support/fake-model.js';
import { dedupInstructions, dedupTexts, fakeDeps, putAndSplit, readJsonl } from '../support/pipeline.js';

const posts = [
  'The ferry to the island leaves at noon every day.',
  'My neighbour keeps parking across my driveway.',
  'Nobody in this office ever refills the printer.',
  'That referee ruined the whole match for us.',
  'The new bakery on Main Street burns every loaf.',
  'Our landlord has not fixed the heating since March.',
];
const body = posts.map((text, i) => JSON.stringify({ id: `p${i}`, text })).join('\n');

/** Splits six records into three shards of two and runs every stage on the shards listed. */
async function prepare(complete: string[], partial: Record<string, 'induce' | 'filter'> = {}) {
  const setup = fakeDeps(undefined, { shardSize: 2 });
  const { runId, shards } = await putAndSplit(setup.deps, 'posts.jsonl', body);
  await dedupTexts({ runId }, setup.deps);
  for (const shard of shards)
    if (complete.includes(shard) || partial[shard]) await induce({ runId, shard }, setup.deps);
  await dedupInstructions({ runId }, setup.deps);
  for (const shard of complete)
    for (const stage of [filter, respond, evaluate]) await stage({ runId, shard }, setup.deps);
  return { ...setup, runId, shards };
}

describe('merge', () => {
  it('writes the pairs of complete shards and the records of failed shards as rejects of the failing stage', async () => {
    const { store, deps, runId } = await prepare(['00000', '00002'], { '00001': 'filter' });

    const result = await merge(
      { runId, shardResults: [{ shard: '00001', failed: true, error: 'ModelThrottledError' }] },
      deps,
    );

    const pairs = await readJsonl<Pair>(store, outputKey(runId, 'pairs.jsonl'));
    const rejects = await readJsonl<Reject>(store, outputKey(runId, 'rejects.jsonl'));
    expect(pairs.map((p) => p.id)).toEqual(['p0', 'p1', 'p4', 'p5']);
    expect(rejects.map((r) => [r.id, r.stage, r.reason, r.detail])).toEqual([
      ['p2', 'filter', 'shard-failed', 'ModelThrottledError in filter'],
      ['p3', 'filter', 'shard-failed', 'ModelThrottledError in filter'],
    ]);
    expect(result).toMatchObject({ pairs: 4, rejects: 2 });
  });

  it('reports counts, calls and the failed shard in report.json', async () => {
    const { store, deps, runId } = await prepare(['00000', '00002'], { '00001': 'filter' });

    await merge({ runId, shardResults: [{ shard: '00001', failed: true, error: 'Error' }] }, deps);

    const report = JSON.parse(await store.get(outputKey(runId, 'report.json')));
    expect(report.accounting).toEqual({ inputRecords: 6, pairs: 4, rejects: 2, balanced: true });
    expect(report.stages.induce).toMatchObject({ in: 6, out: 6, calls: 6 });
    expect(report.stages.evaluate).toMatchObject({ in: 4, out: 4, calls: 4 });
    expect(report.failedShards).toEqual([{ shard: '00001', stage: 'filter', error: 'Error' }]);
    expect(report.rejectsByStage).toEqual({ filter: { 'shard-failed': 2 } });
    const card = await store.get(outputKey(runId, 'README.md'));
    expect(card).toContain('1 shard(s) failed after every retry (in filter): their 2 records');
  });

  it('fails with an AccountingError when a record went missing between stages', async () => {
    const { store, deps, runId } = await prepare(['00000', '00001', '00002']);
    const kept = await store.get(shardKey(runId, '00001', 'evaluate'));
    await store.put(shardKey(runId, '00001', 'evaluate'), `${kept.split('\n')[0]}\n`);

    const act = merge({ runId, shardResults: [] }, deps);

    await expect(act).rejects.toThrow(AccountingError);
    await expect(merge({ runId, shardResults: [] }, deps)).rejects.toThrow(
      /shard 00001 evaluate took in 2 records but put out 1/,
    );
  });

  it('fails with an AccountingError when a stage put out a record it never took in', async () => {
    const { store, deps, runId } = await prepare(['00000', '00001', '00002']);
    const [first] = (await store.get(shardKey(runId, '00001', 'evaluate'))).split('\n');
    const stranger = { ...JSON.parse(first as string), id: 'not-from-this-shard' };
    await store.put(shardKey(runId, '00001', 'evaluate'), `${JSON.stringify(stranger)}\n${first}\n`);

    const act = merge({ runId, shardResults: [] }, deps);

    await expect(act).rejects.toThrow(/took in 2 records but put out 2 .* or not the same ones/);
  });

  it('writes no outputs when the books do not balance', async () => {
    const { store, deps, runId } = await prepare(['00000', '00001', '00002']);
    await store.put(shardKey(runId, '00002', 'evaluate'), '');

    await merge({ runId, shardResults: [] }, deps).catch(() => undefined);

    expect(await store.tryGet(outputKey(runId, 'rejects.jsonl'))).toBeUndefined();
    expect(await store.tryGet(outputKey(runId, 'pairs.jsonl'))).toBeUndefined();
  });
});

describe('merge batch figures', () => {
  /** A run of three complete shards whose fake model costs $1 in and $2 out per 1,000 tokens on-demand. */
  async function prepareRun(mode: 'on-demand' | 'batch') {
    const setup = fakeDeps(undefined, {
      shardSize: 2,
      mode,
      prices: { 'bedrock:fake': { inputPer1k: 1, outputPer1k: 2 } },
    });
    const { runId, shards } = await putAndSplit(setup.deps, 'posts.jsonl', body);
    await dedupTexts({ runId }, setup.deps);
    for (const shard of shards) await induce({ runId, shard }, setup.deps);
    await dedupInstructions({ runId }, setup.deps);
    for (const shard of shards)
      for (const stage of [filter, respond, evaluate]) await stage({ runId, shard }, setup.deps);
    return { ...setup, runId };
  }

  const jobStats = (jobName: string, figures: Omit<BatchJobStats, 'jobName' | 'status'>): BatchJobStats => ({
    jobName,
    status: 'Completed',
    ...figures,
  });

  /** What the model stages paid on-demand, summed from the shard stats in the report. */
  const paidOnDemand = (stages: Record<string, StageStats>) =>
    MODEL_STAGES.map((s) => stages[s] as StageStats).reduce(
      (sum, s) => ({
        calls: sum.calls + s.calls,
        inputTokens: sum.inputTokens + s.inputTokens,
        outputTokens: sum.outputTokens + s.outputTokens,
        costUsd: sum.costUsd + s.costUsd,
      }),
      { calls: 0, inputTokens: 0, outputTokens: 0, costUsd: 0 },
    );

  it('reports batch jobs per stage and under modes, beside what the stages paid on-demand', async () => {
    // Prepare
    const { store, deps, runId } = await prepareRun('batch');
    const induceJob = jobStats('induce-a', {
      records: 100,
      answered: 97,
      errored: 2,
      missing: 1,
      inputTokens: 12_000,
      outputTokens: 3_000,
      costUsd: 0.45,
    });
    const filterJob = jobStats('filter-a', {
      records: 120,
      answered: 120,
      errored: 0,
      missing: 0,
      inputTokens: 30_000,
      outputTokens: 2_400,
      costUsd: 0.27,
    });
    const plans: BatchPlan[] = [
      {
        stage: 'induce',
        mode: 'batch',
        calls: 205,
        onDemand: 5,
        jobs: [
          { jobName: 'induce-a', records: 100 },
          { jobName: 'induce-b', records: 100 },
        ],
      },
      {
        stage: 'filter',
        mode: 'batch',
        calls: 120,
        onDemand: 0,
        jobs: [{ jobName: 'filter-a', records: 120 }],
      },
      { stage: 'respond', mode: 'on-demand', reason: 'too few calls', calls: 4, onDemand: 4, jobs: [] },
    ];
    for (const plan of plans) await store.put(batchPlanKey(runId, plan.stage), JSON.stringify(plan));
    await store.put(batchKey(runId, 'induce', 'induce-a', 'stats.json'), JSON.stringify(induceJob));
    await store.put(batchKey(runId, 'filter', 'filter-a', 'stats.json'), JSON.stringify(filterJob));

    // Act
    await merge({ runId }, deps);

    // Assess
    const report = JSON.parse(await store.get(outputKey(runId, 'report.json')));
    expect(report.mode).toBe('batch');
    // Two jobs ended (induce-b has no stats yet): 100 + 120 records, 97 + 120 answered, $0.45 + $0.27.
    expect(report.modes.batch).toEqual({
      jobs: 2,
      records: 220,
      calls: 217,
      errored: 2,
      missing: 1,
      inputTokens: 42_000,
      outputTokens: 5_400,
      costUsd: expect.closeTo(0.72, 10),
    });
    expect(report.modes['on-demand']).toEqual(paidOnDemand(report.stages));
    expect(report.modes['on-demand'].costUsd).toBeGreaterThan(0);
    expect(report.batch).toEqual({
      induce: { mode: 'batch', calls: 205, onDemand: 5, jobs: [induceJob], jobsWithoutStats: 1 },
      filter: { mode: 'batch', calls: 120, onDemand: 0, jobs: [filterJob], jobsWithoutStats: 0 },
      respond: {
        mode: 'on-demand',
        reason: 'too few calls',
        calls: 4,
        onDemand: 4,
        jobs: [],
        jobsWithoutStats: 0,
      },
    });
    expect(MODEL_STAGES.map((s) => report.stages[s].batchCostUsd)).toEqual([0.45, 0.27, 0, 0]);
    expect(await store.get(outputKey(runId, 'README.md'))).toContain(runId);
  });

  it('adds the batch calls, tokens and cost to the run totals and leaves the shard stats as paid on-demand', async () => {
    // Prepare
    const { store, deps, runId } = await prepareRun('batch');
    await merge({ runId }, deps);
    const before = JSON.parse(await store.get(outputKey(runId, 'report.json')));
    const plan: BatchPlan = {
      stage: 'evaluate',
      mode: 'batch',
      calls: 150,
      onDemand: 0,
      jobs: [{ jobName: 'evaluate-a', records: 150 }],
    };
    const job = jobStats('evaluate-a', {
      records: 150,
      answered: 150,
      errored: 0,
      missing: 0,
      inputTokens: 60_000,
      outputTokens: 6_000,
      costUsd: 0.36,
    });
    await store.put(batchPlanKey(runId, 'evaluate'), JSON.stringify(plan));
    await store.put(batchKey(runId, 'evaluate', 'evaluate-a', 'stats.json'), JSON.stringify(job));

    // Act
    await merge({ runId }, deps);

    // Assess
    const report = JSON.parse(await store.get(outputKey(runId, 'report.json')));
    const shardCost = Object.values(report.stages as Record<string, StageStats>).reduce(
      (sum, s) => sum + s.costUsd,
      0,
    );
    expect(report.totals.costUsd).toBeCloseTo(shardCost + 0.36, 10);
    expect(report.stages.evaluate).toEqual({ ...before.stages.evaluate, batchCostUsd: 0.36 });
    expect(report.totals.calls).toBe(before.totals.calls + 150);
    expect(report.totals.inputTokens).toBe(before.totals.inputTokens + 60_000);
    expect(report.totals.outputTokens).toBe(before.totals.outputTokens + 6_000);
    expect(report.totals.cacheHits).toBe(Math.max(0, before.totals.cacheHits - 150));
    expect(report.totals.costUsd).toBeCloseTo(before.totals.costUsd + 0.36, 10);
  });

  it('reports zero batch figures when no stage was planned for batch', async () => {
    // Prepare
    const { store, deps, runId } = await prepareRun('on-demand');

    // Act
    await merge({ runId }, deps);

    // Assess
    const report = JSON.parse(await store.get(outputKey(runId, 'report.json')));
    expect(report.mode).toBe('on-demand');
    expect(report.modes.batch).toEqual({
      jobs: 0,
      records: 0,
      calls: 0,
      errored: 0,
      missing: 0,
      inputTokens: 0,
      outputTokens: 0,
      costUsd: 0,
    });
    expect(report.batch).toEqual({});
    expect(report.modes['on-demand']).toEqual(paidOnDemand(report.stages));
    expect(MODEL_STAGES.map((s) => report.stages[s].batchCostUsd)).toEqual([0, 0, 0, 0]);
    expect(report.totals.costUsd).toBeCloseTo(report.modes['on-demand'].costUsd, 10);
  });

  it('reports what the run cost in all, with its serverless part and per kept pair, at a named price table', async () => {
    // Prepare
    const { store, deps, runId } = await prepareRun('on-demand');

    // Act
    await merge({ runId }, deps);

    // Assess
    const { cost, totals, pairs } = JSON.parse(await store.get(outputKey(runId, 'report.json')));
    expect(cost.priceTable).toBe(PRICE_TABLE.version);
    expect(cost.modelsUsd).toBeCloseTo(totals.costUsd, 12);
    expect(cost.infra.lambdaRequests).toBeGreaterThan(4);
    expect(cost.infra.usd).toBeCloseTo(infraCostOf(cost.infra), 12);
    expect(cost.totalUsd).toBeCloseTo(cost.modelsUsd + cost.infra.usd, 12);
    expect(pairs).toBeGreaterThan(0);
    expect(cost.perPairUsd).toBeCloseTo(cost.totalUsd / pairs, 12);
  });

  it('fails with an AccountingError naming a batch plan it cannot read', async () => {
    // Prepare
    const { store, deps, runId } = await prepareRun('batch');
    await store.put(batchPlanKey(runId, 'respond'), JSON.stringify({ jobs: [['key-1']], onDemand: 0 }));

    // Act
    const act = merge({ runId }, deps);

    // Assess
    await expect(act).rejects.toThrow(AccountingError);
    await expect(merge({ runId }, deps)).rejects.toThrow(/batch\/respond\/plan\.json is unreadable/);
  });
});

describe('merge curation and exports', () => {
  /** Runs six distinct posts through every stage with a model whose chosen response and score are given. */
  async function run(respondWith: (i: number) => string, overrides = {}) {
    const score = (prompt: string) => 2 + (posts.findIndex((p) => prompt.includes(p.slice(0, 30))) % 4);
    const model = new FakeModel('bedrock:fake', {
      generate: (req) => {
        const response = /<response>([\s\S]*?)<\/response>/.exec(
          req.prompt.split('### Response:').pop() ?? '',
        );
        if (response) return `Write a post saying: ${response[1]}`;
        const i = posts.findIndex((p) => req.prompt.includes(p.slice(0, 30)));
        return respondWith(i);
      },
      judge: (req) =>
        req.toolName === 'record_preference'
          ? {
              preferred: /<response_a>(I will not|Sorry)/.test(req.prompt) ? 'A' : 'B',
              rationale: 'Declines.',
              score: score(req.prompt),
            }
          : { rationale: 'Fits.', score: 4 },
    });
    const setup = fakeDeps(model, { shardSize: 2, stages: { evaluate: { threshold: 1 } }, ...overrides });
    const { runId, shards } = await putAndSplit(setup.deps, 'posts.jsonl', body);
    await dedupTexts({ runId }, setup.deps);
    for (const shard of shards) await induce({ runId, shard }, setup.deps);
    await dedupInstructions({ runId }, setup.deps);
    for (const shard of shards)
      for (const stage of [filter, respond, evaluate]) await stage({ runId, shard }, setup.deps);
    const result = await merge({ runId }, setup.deps);
    return { ...setup, runId, result };
  }

  it('caps pairs that share a near-identical chosen response, keeping the best scored and naming it', async () => {
    // Prepare
    const same =
      'I will not help with that, because it insults a real person. I can help you write a fair review instead.';

    // Act
    const { store, runId, result } = await run(() => same, { quality: { maxNearIdenticalChosen: 2 } });

    // Assess
    const pairs = await readJsonl<Pair>(store, outputKey(runId, 'pairs.jsonl'));
    const rejects = await readJsonl<Reject>(store, outputKey(runId, 'rejects.jsonl'));
    // Scores by post: 2, 3, 4, 5, 2, 3: the two best are p3 (5) and p2 (4).
    expect(pairs.map((p) => p.id).sort()).toEqual(['p2', 'p3']);
    expect(rejects.map((r) => [r.id, r.stage, r.reason, r.duplicateOf])).toEqual(
      ['p0', 'p1', 'p4', 'p5'].map((id) => [id, 'merge', 'near-identical-chosen', 'p3']),
    );
    expect(result).toMatchObject({ pairs: 2, rejects: 4 });
  });

  it('reports the stock-refusal share, distinct-n and the most frequent chosen responses', async () => {
    // Prepare
    const refusal = "Sorry, but I can't assist with that.";
    const own = (i: number) =>
      `I will not help with that, since it targets someone. Instead, tell me what upset you about post ${'abcdef'[i]} and we can find words that are fair.`;

    // Act
    const { store, runId } = await run((i) => (i < 2 ? refusal : own(i)), {
      quality: { rejectStockRefusals: false, maxNearIdenticalChosen: 10 },
    });

    // Assess
    const report = JSON.parse(await store.get(outputKey(runId, 'report.json')));
    expect(report.quality.chosen).toMatchObject({ pairs: 6, stockRefusals: 2, stockRefusalShare: 2 / 6 });
    expect(report.quality.chosen.mostFrequent[0]).toEqual({ text: refusal, count: 2 });
    expect(report.quality.chosen.distinct2).toBeGreaterThan(0);
    expect(report.quality.chosen.distinct2).toBeLessThan(1);
    expect(report.categories).toEqual({ '(none)': 6 });
  });

  it('writes every export, each valid against its schema, the Parquet file readable, and a dataset card', async () => {
    // Prepare
    const own = (i: number) =>
      `I will not help with that. It is unfair to ${['the ferry', 'a neighbour', 'an office', 'a referee', 'a bakery', 'a landlord'][i]}; I can help you write a calm, specific complaint instead.`;

    // Act
    const { store, runId, result } = await run(own);

    // Assess
    const files = result.exportKeys.map((k) => k.split('/').pop());
    expect(files).toEqual([
      'dpo.jsonl',
      'conversational.jsonl',
      'nova-dpo.jsonl',
      'pairs.parquet',
      'README.md',
      'report.html',
    ]);
    for (const format of Object.values(EXPORT_FORMATS)) {
      const rows = await readJsonl(store, outputKey(runId, format.file));
      expect(rows).toHaveLength(6);
      for (const row of rows) expect(format.schema.safeParse(row).success).toBe(true);
    }
    const parquet = await readParquetRows(await readFile(store.pathOf(outputKey(runId, 'pairs.parquet'))));
    const pairs = await readJsonl<Pair>(store, outputKey(runId, 'pairs.jsonl'));
    expect(parquet.map((r) => [r.id, r.prompt, r.chosen, r.rejected])).toEqual(
      pairs.map((p) => [p.id, p.prompt, p.chosen, p.rejected]),
    );
    const card = await store.get(outputKey(runId, 'README.md'));
    expect(card).toMatch(/^---\n/);
    expect(card).toContain(runId);
    expect(card).toContain('nova-dpo.jsonl');
    const html = await store.get(outputKey(runId, 'report.html'));
    expect(html).toMatch(/^<!DOCTYPE html>/);
    expect(html).toContain(runId);
    for (const chart of ['funnel', 'cost', 'scores-filter', 'scores-evaluate'])
      expect(html).toContain(`<svg id="${chart}"`);
    const report = JSON.parse(await store.get(outputKey(runId, 'report.json')));
    expect(report.exports).toEqual(result.exportKeys);
  });
});
