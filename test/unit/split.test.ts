import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../lib/pipeline/errors.js';
import { manifestKey, shardKey, splitRejectsKey } from '../../lib/pipeline/keys.js';
import { recordIdFor } from '../../lib/pipeline/records.js';
import type { InputRecord, Manifest, Reject } from '../../lib/pipeline/schemas.js';
import { fakeDeps, putAndSplit, readJsonl } from '../support/pipeline.js';

const fixture = readFileSync(new URL('../fixtures/records-60.jsonl', import.meta.url), 'utf8');

describe('split', () => {
  it('rejects each malformed line with its line number and keeps the rest', async () => {
    const { store, deps } = fakeDeps(undefined, { input: { maxTextChars: 2000 } });

    const result = await putAndSplit(deps, 'records.jsonl', fixture);

    const rejects = await readJsonl<Reject>(store, splitRejectsKey(result.runId));
    expect(rejects.map((r) => [r.reason, r.line])).toEqual([
      ['invalid-json', 6],
      ['missing-text', 13],
      ['empty-text', 21],
      ['text-too-long', 31],
      ['duplicate-text', 41],
      ['not-an-object', 51],
    ]);
    expect(result.records).toBe(62);
    const manifest = JSON.parse(await store.get(manifestKey(result.runId))) as Manifest;
    expect(manifest.shards.reduce((n, s) => n + s.records, 0)).toBe(56);
  });

  it('names a duplicate text after the record it repeats', async () => {
    const { store, deps } = fakeDeps(undefined, { input: { maxTextChars: 2000 } });

    const result = await putAndSplit(deps, 'records.jsonl', fixture);

    const duplicate = (await readJsonl<Reject>(store, splitRejectsKey(result.runId))).find(
      (r) => r.id === 'dup-text',
    );
    expect(duplicate?.detail).toBe('same text as rec-000');
  });

  it('gives records without an id a stable id from source and line', async () => {
    const { store, deps } = fakeDeps();

    const result = await putAndSplit(
      deps,
      'plain.jsonl',
      '{"text":"first"}\n{"text":"second","id":"given"}\n',
    );

    const records = await readJsonl<InputRecord>(store, shardKey(result.runId, '00000', 'split'));
    expect(records.map((r) => r.id)).toEqual([recordIdFor('incoming/plain.jsonl', 1), 'given']);
  });

  it('gives a record that reuses an earlier id a reject with an id of its own', async () => {
    const { store, deps } = fakeDeps();

    const result = await putAndSplit(deps, 'ids.jsonl', '{"id":"a","text":"one"}\n{"id":"a","text":"two"}\n');

    const [reject] = await readJsonl<Reject>(store, splitRejectsKey(result.runId));
    expect(reject).toMatchObject({
      reason: 'duplicate-id',
      line: 2,
      id: recordIdFor('incoming/ids.jsonl', 2),
    });
  });

  it('reads CSV with a BOM, CRLF line ends and quoted fields that span lines', async () => {
    const { store, deps } = fakeDeps(undefined, { input: { textField: 'rejected', categoryField: 'label' } });
    const csv =
      '\uFEFFinstruction,rejected,chosen,label\r\n"a","first\r\npost",x,hate\r\n"b","second post",y,nsfw\r\n';

    const result = await putAndSplit(deps, 'released.csv', csv);

    const records = await readJsonl<InputRecord>(store, shardKey(result.runId, '00000', 'split'));
    expect(records.map((r) => [r.text, r.category, r.line])).toEqual([
      ['first\npost', 'hate', 2],
      ['second post', 'nsfw', 4],
    ]);
    expect(records[0]?.meta).toEqual({ instruction: 'a', chosen: 'x' });
  });

  it('reads a .tsv file with tabs as the delimiter', async () => {
    const { store, deps } = fakeDeps();

    const result = await putAndSplit(deps, 'posts.tsv', 'id\ttext\n1\thello, world\n');

    const records = await readJsonl<InputRecord>(store, shardKey(result.runId, '00000', 'split'));
    expect(records.map((r) => [r.id, r.text])).toEqual([['1', 'hello, world']]);
  });

  it('fails with an InputError naming the file and the missing column', async () => {
    const { deps } = fakeDeps();

    const act = putAndSplit(deps, 'released.csv', 'instruction,rejected\na,b\n');

    await expect(act).rejects.toThrow(InputError);
    await expect(act).rejects.toThrow(
      /incoming\/released\.csv: no column "text".*columns: instruction, rejected/,
    );
  });

  it('starts no second run when the same object version is delivered again', async () => {
    const { deps } = fakeDeps();
    const first = await putAndSplit(deps, 'again.jsonl', '{"text":"hello"}\n', 'exec-1');

    const second = await putAndSplit(deps, 'again.jsonl', '{"text":"hello"}\n', 'exec-2');

    expect(first.duplicate).toBe(false);
    expect(second).toEqual({ runId: first.runId, duplicate: true, shards: [], records: 0 });
  });

  it('lets the same execution split again after a retry', async () => {
    const { deps } = fakeDeps();
    const first = await putAndSplit(deps, 'again.jsonl', '{"text":"hello"}\n', 'exec-1');

    const retried = await putAndSplit(deps, 'again.jsonl', '{"text":"hello"}\n', 'exec-1');

    expect(retried).toEqual(first);
  });

  it('raises the shard size so a run never has more than maxShards shards', async () => {
    const { deps } = fakeDeps(undefined, { shardSize: 1, maxShards: 4 });
    const body = Array.from({ length: 10 }, (_, i) => JSON.stringify({ text: `text ${i}` })).join('\n');

    const result = await putAndSplit(deps, 'many.jsonl', body);

    expect(result.shards).toEqual(['00000', '00001', '00002', '00003']);
  });

  it('rejects text that is not valid UTF-8 or holds NUL bytes', async () => {
    const { store, deps } = fakeDeps();
    const body = Buffer.concat([
      Buffer.from('{"text":"ok"}\n{"text":"bad '),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('"}\n{"text":"nul \\u0000 here"}\n'),
    ]);
    await store.put('incoming/bytes.jsonl', body);

    const { split } = await import('../../lib/pipeline/stages/split.js');
    const result = await split(
      { event: { inputKey: 'incoming/bytes.jsonl' }, executionId: 'e', config: deps.config },
      deps,
    );

    const rejects = await readJsonl<Reject>(store, splitRejectsKey(result.runId));
    expect(rejects.map((r) => [r.reason, r.line])).toEqual([
      ['invalid-utf8', 2],
      ['binary-content', 3],
    ]);
  });
});

describe('split started by an S3 event', () => {
  const event = (key: string, sequencer: string) => ({
    'detail-type': 'Object Created' as const,
    detail: { bucket: { name: 'b' }, object: { key, etag: 'e1', sequencer } },
  });

  it('starts no second run for a redelivered event but a new run for a new upload', async () => {
    const { deps } = fakeDeps();
    await deps.store.put('incoming/a.jsonl', '{"text":"hello"}\n');
    const { split } = await import('../../lib/pipeline/stages/split.js');

    const first = await split(
      { event: event('incoming/a.jsonl', '01'), executionId: 'x1', config: deps.config },
      deps,
    );
    const redelivered = await split(
      { event: event('incoming/a.jsonl', '01'), executionId: 'x2', config: {} },
      deps,
    );
    const reuploaded = await split(
      { event: event('incoming/a.jsonl', '02'), executionId: 'x3', config: {} },
      deps,
    );

    expect(first.duplicate).toBe(false);
    expect(redelivered).toMatchObject({ runId: first.runId, duplicate: true });
    expect(reuploaded.duplicate).toBe(false);
    expect(reuploaded.runId).not.toBe(first.runId);
  });

  it('finds an input whose key arrives URL-encoded', async () => {
    const { deps } = fakeDeps();
    await deps.store.put('incoming/my posts (1).jsonl', '{"text":"hello"}\n');
    const { split } = await import('../../lib/pipeline/stages/split.js');

    const result = await split(
      { event: event('incoming/my+posts+%281%29.jsonl', '01'), executionId: 'x1', config: deps.config },
      deps,
    );

    expect(result.records).toBe(1);
  });
});
