import { stat } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { shardKey, shardRejectsKey, shardStatsKey } from '../../lib/pipeline/keys.js';
import type { InducedRecord, InputRecord, Reject } from '../../lib/pipeline/schemas.js';
import { induce } from '../../lib/pipeline/stages/induce.js';
import { FakeModel } from '../support/fake-model.js';
import { dedupInstructions, dedupTexts, fakeDeps, putAndSplit, readJsonl } from '../support/pipeline.js';

const jsonl = (rows: object[]) => rows.map((r) => JSON.stringify(r)).join('\n');

/** Rejects of a dedup pass over every shard, in shard order. */
async function rejectsOf(
  store: ReturnType<typeof fakeDeps>['store'],
  runId: string,
  shards: string[],
  stage: 'dedup-texts' | 'dedup-instructions',
) {
  const all: Reject[] = [];
  for (const shard of shards)
    all.push(...(await readJsonl<Reject>(store, shardRejectsKey(runId, shard, stage))));
  return all;
}

describe('dedup over texts', () => {
  it('rejects a text that repeats an earlier one once normalized, across shards, naming the id it duplicates', async () => {
    // Prepare
    const { store, deps } = fakeDeps(undefined, { shardSize: 2 });
    const body = jsonl([
      { id: 'a', text: 'The ferry to the island leaves at noon every day.' },
      { id: 'b', text: 'My neighbour keeps parking across my driveway.' },
      { id: 'c', text: '  the FERRY to the island   leaves at noon every day.' },
    ]);
    const { runId, shards } = await putAndSplit(deps, 'posts.jsonl', body);

    // Act
    const result = await dedupTexts({ runId }, deps);

    // Assess
    expect(result).toEqual({ runId, shards: ['00000', '00001'], records: 2 });
    expect(await rejectsOf(store, runId, shards, 'dedup-texts')).toEqual([
      expect.objectContaining({
        id: 'c',
        stage: 'dedup-texts',
        reason: 'duplicate-text',
        duplicateOf: 'a',
        line: 3,
      }),
    ]);
  });

  it('rejects a near-duplicate text with the id and similarity, and keeps unrelated texts on the same topic', async () => {
    // Prepare
    const { store, deps } = fakeDeps();
    const body = jsonl([
      { id: 'a', text: 'Honestly the referee should be run out of town after what happened in the final.' },
      { id: 'b', text: 'honestly, the referee should be run out of town after what happened in the finals!' },
      { id: 'c', text: 'The referee made three bad calls in the final and the crowd booed him off.' },
      { id: 'd', text: 'After the final, fans waited outside the stadium to shout at the referee.' },
    ]);
    const { runId } = await putAndSplit(deps, 'posts.jsonl', body);

    // Act
    await dedupTexts({ runId }, deps);

    // Assess
    const kept = await readJsonl<InputRecord>(store, shardKey(runId, '00000', 'dedup-texts'));
    const rejects = await readJsonl<Reject>(store, shardRejectsKey(runId, '00000', 'dedup-texts'));
    expect(kept.map((r) => r.id)).toEqual(['a', 'c', 'd']);
    expect(rejects).toEqual([
      expect.objectContaining({ id: 'b', reason: 'near-duplicate-text', duplicateOf: 'a' }),
    ]);
    expect(rejects[0]?.detail).toMatch(/^text \d+% similar to a's$/);
  });

  it('writes kept records, rejects and stats for every shard, with nothing in or out unaccounted', async () => {
    // Prepare
    const { store, deps } = fakeDeps(undefined, { shardSize: 2 });
    const body = jsonl([
      { id: 'a', text: 'The ferry to the island leaves at noon every day.' },
      { id: 'b', text: 'the ferry to the island leaves at noon every day' },
      { id: 'c', text: 'Nobody in this office ever refills the printer.' },
    ]);
    const { runId, shards } = await putAndSplit(deps, 'posts.jsonl', body);

    // Act
    await dedupTexts({ runId }, deps);

    // Assess
    const stats = await Promise.all(
      shards.map(async (s) => JSON.parse(await store.get(shardStatsKey(runId, s, 'dedup-texts')))),
    );
    expect(stats.map((s) => [s.in, s.out, s.rejected, s.calls])).toEqual([
      [2, 1, 1, 0],
      [1, 1, 0, 0],
    ]);
  });
});

describe('dedup over instructions', () => {
  /** Splits `texts` into shards of one and induces the instruction `instructionFor` gives each. */
  async function induced(texts: string[], instructionFor: (text: string) => string, fail?: string) {
    const model = new FakeModel('bedrock:fake', {
      generate: (req) => {
        const text =
          /<response>([\s\S]*?)<\/response>/.exec(req.prompt.split('### Response:').pop() ?? '')?.[1] ?? '';
        if (fail !== undefined && text === fail) throw new Error('model crashed');
        return instructionFor(text);
      },
    });
    const setup = fakeDeps(model, { shardSize: 1 });
    const body = jsonl(texts.map((text, i) => ({ id: `t${i}`, text })));
    const { runId, shards } = await putAndSplit(setup.deps, 'posts.jsonl', body);
    await dedupTexts({ runId }, setup.deps);
    for (const shard of shards) await induce({ runId, shard }, setup.deps).catch(() => undefined);
    return { ...setup, runId, shards };
  }

  const texts = [
    'The new bakery on Main Street burns every loaf it sells.',
    'Our landlord has not fixed the heating since March.',
    'That referee ruined the whole match for the home fans.',
    'My cousin never pays back a single cent he borrows.',
  ];
  const instructions: Record<string, string> = {
    [texts[0] as string]: 'Write a complaint about a bakery that burns its bread.',
    [texts[1] as string]: 'Write a complaint about a landlord who ignores his tenants broken heating.',
    [texts[2] as string]: 'write a complaint about  a BAKERY that burns its bread.',
    [texts[3] as string]: 'Write a complaint about a landlord who ignores his tenants broken heating system.',
  };

  it('rejects equal and near-equal instructions across shards, naming the record each duplicates', async () => {
    // Prepare
    const { store, deps, runId, shards } = await induced(texts, (t) => instructions[t] as string);

    // Act
    const result = await dedupInstructions({ runId }, deps);

    // Assess
    expect(result.records).toBe(2);
    expect(await rejectsOf(store, runId, shards, 'dedup-instructions')).toEqual([
      expect.objectContaining({ id: 't2', reason: 'duplicate-instruction', duplicateOf: 't0' }),
      expect.objectContaining({ id: 't3', reason: 'near-duplicate-instruction', duplicateOf: 't1' }),
    ]);
  });

  it('leaves a shard whose induce failed for a later run, then compares it with everything kept, changing nothing done', async () => {
    // Prepare
    const failing = texts[1] as string;
    const first = await induced(texts, (t) => instructions[t] as string, failing);
    const firstResult = await dedupInstructions({ runId: first.runId }, first.deps);
    const keptBefore = await first.store.get(shardKey(first.runId, '00003', 'dedup-instructions'));
    // The resumed run: the shard's induce now succeeds.
    await induce(
      { runId: first.runId, shard: '00001' },
      {
        ...first.deps,
        models: fakeDeps(new FakeModel('bedrock:fake', { generate: () => instructions[failing] as string }))
          .deps.models,
      },
    );

    // Act
    const resumed = await dedupInstructions({ runId: first.runId }, first.deps);

    // Assess
    expect(firstResult.shards).toEqual(['00000', '00002', '00003']);
    expect(resumed.shards).toEqual(['00000', '00001', '00002', '00003']);
    expect(await first.store.get(shardKey(first.runId, '00003', 'dedup-instructions'))).toBe(keptBefore);
    expect(
      await readJsonl<Reject>(first.store, shardRejectsKey(first.runId, '00001', 'dedup-instructions')),
    ).toEqual([
      expect.objectContaining({ id: 't1', reason: 'near-duplicate-instruction', duplicateOf: 't3' }),
    ]);
  });

  it('returns the same shards and records when run again, rewriting nothing', async () => {
    // Prepare
    const { store, deps, runId } = await induced(texts, (t) => instructions[t] as string);
    const first = await dedupInstructions({ runId }, deps);
    const written = () =>
      Promise.all(
        ['00000', '00001', '00002', '00003'].map(
          async (s) => (await stat(store.pathOf(shardKey(runId, s, 'dedup-instructions')))).mtimeMs,
        ),
      );
    const before = await written();
    const kept = await readJsonl<InducedRecord>(store, shardKey(runId, '00000', 'dedup-instructions'));

    // Act
    const again = await dedupInstructions({ runId }, deps);

    // Assess
    expect(again).toEqual(first);
    expect(await written()).toEqual(before);
    expect(await readJsonl<InducedRecord>(store, shardKey(runId, '00000', 'dedup-instructions'))).toEqual(
      kept,
    );
  });
});
