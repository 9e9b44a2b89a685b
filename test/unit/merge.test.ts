import { describe, expect, it } from 'vitest';
import { AccountingError } from '../../lib/pipeline/errors.js';
import { outputKey, shardKey } from '../../lib/pipeline/keys.js';
import type { Pair, Reject } from '../../lib/pipeline/schemas.js';
import { evaluate } from '../../lib/pipeline/stages/evaluate.js';
import { filter } from '../../lib/pipeline/stages/filter.js';
import { induce } from '../../lib/pipeline/stages/induce.js';
import { merge } from '../../lib/pipeline/stages/merge.js';
import { respond } from '../../lib/pipeline/stages/respond.js';
import { fakeDeps, putAndSplit, readJsonl } from '../support/pipeline.js';

const body = Array.from({ length: 6 }, (_, i) =>
  JSON.stringify({ id: `p${i}`, text: `post number ${i}` }),
).join('\n');

/** Splits six records into three shards of two and runs every stage on the shards listed. */
async function prepare(complete: string[], partial: Record<string, 'induce' | 'filter'> = {}) {
  const setup = fakeDeps(undefined, { shardSize: 2 });
  const { runId, shards } = await putAndSplit(setup.deps, 'posts.jsonl', body);
  for (const shard of shards) {
    const stages = complete.includes(shard)
      ? [induce, filter, respond, evaluate]
      : partial[shard] === 'filter'
        ? [induce]
        : [];
    for (const stage of stages) await stage({ runId, shard }, setup.deps);
  }
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
