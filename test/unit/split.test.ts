import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { InputError } from '../../lib/pipeline/errors.js';
import { manifestKey, shardKey, splitRejectsKey, splitStatsKey } from '../../lib/pipeline/keys.js';
import { recordIdFor, runIdFor } from '../../lib/pipeline/records.js';
import type { InputRecord, Manifest, Reject } from '../../lib/pipeline/schemas.js';
import { split } from '../../lib/pipeline/stages/split.js';
import type { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { fakeDeps, putAndSplit, readJsonl } from '../support/pipeline.js';

const MiB = 1024 * 1024;
const fixture = readFileSync(new URL('../fixtures/records-60.jsonl', import.meta.url), 'utf8');

describe('split', () => {
  it('rejects each malformed line with its line number and keeps the rest', async () => {
    const { store, deps } = fakeDeps(undefined, { quality: { lengths: { rejected: { max: 2000 } } } });

    const result = await putAndSplit(deps, 'records.jsonl', fixture);

    const rejects = await readJsonl<Reject>(store, splitRejectsKey(result.runId));
    expect(rejects.map((r) => [r.reason, r.line])).toEqual([
      ['invalid-json', 6],
      ['missing-text', 13],
      ['empty-text', 21],
      ['text-too-long', 31],
      ['not-an-object', 51],
    ]);
    expect(result.records).toBe(62);
    const manifest = JSON.parse(await store.get(manifestKey(result.runId))) as Manifest;
    expect(manifest.shards.reduce((n, s) => n + s.records, 0)).toBe(57);
  });

  it('rejects a text shorter than the bounds and one that holds a spreadsheet error value', async () => {
    // Prepare
    const { store, deps } = fakeDeps(undefined, { quality: { lengths: { rejected: { min: 5 } } } });
    const body = ['{"text":"ok"}', '{"text":"#NAME?"}', '{"text":"a real post about the weather"}'].join(
      '\n',
    );

    // Act
    const result = await putAndSplit(deps, 'records.jsonl', body);

    // Assess
    const rejects = await readJsonl<Reject>(store, splitRejectsKey(result.runId));
    expect(rejects.map((r) => [r.line, r.reason, r.detail])).toEqual([
      [1, 'text-too-short', '2 characters, at least 5'],
      [2, 'spreadsheet-artifact', 'holds #NAME?'],
    ]);
  });

  it("counts a text's length in characters, an emoji as one", async () => {
    // Prepare
    const { store, deps } = fakeDeps(undefined, { quality: { lengths: { rejected: { max: 3 } } } });

    // Act
    const result = await putAndSplit(deps, 'records.jsonl', '{"text":"🙂🙂🙂"}\n{"text":"🙂🙂🙂🙂"}\n');

    // Assess
    const rejects = await readJsonl<Reject>(store, splitRejectsKey(result.runId));
    expect(rejects.map((r) => [r.line, r.reason])).toEqual([[2, 'text-too-long']]);
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

  it('returns the finished split to a retry of the same execution without reading the input again', async () => {
    const { deps } = fakeDeps();
    const first = await putAndSplit(deps, 'again.jsonl', '{"text":"hello"}\n{"text":"world"}\n', 'exec-1');
    const reads = vi.spyOn(deps.store, 'getStream');

    const retried = await split(
      { event: { inputKey: 'incoming/again.jsonl' }, executionId: 'exec-1', config: deps.config },
      deps,
    );

    expect(retried).toEqual(first);
    expect(first).toMatchObject({ duplicate: false, shards: ['00000'], records: 2 });
    expect(reads).not.toHaveBeenCalled();
  });

  it('splits again when the same execution retries a split that did not finish', async () => {
    const { store, deps } = fakeDeps();
    const first = await putAndSplit(deps, 'again.jsonl', '{"text":"hello"}\n', 'exec-1');
    rmSync(store.pathOf(splitStatsKey(first.runId)));
    const reads = vi.spyOn(deps.store, 'getStream');

    const retried = await split(
      { event: { inputKey: 'incoming/again.jsonl' }, executionId: 'exec-1', config: deps.config },
      deps,
    );

    expect(retried).toEqual(first);
    expect(reads).toHaveBeenCalled();
    expect(await store.tryGet(splitStatsKey(first.runId))).toBeDefined();
  });

  it('raises the shard size so a run never has more than maxShards shards', async () => {
    const { deps } = fakeDeps(undefined, { shardSize: 1, maxShards: 4 });
    const body = Array.from({ length: 10 }, (_, i) => JSON.stringify({ text: `text ${i}` })).join('\n');

    const result = await putAndSplit(deps, 'many.jsonl', body);

    expect(result.shards).toEqual(['00000', '00001', '00002', '00003']);
  });

  it('rejects JSONL lines that are not valid UTF-8 or hold NUL bytes, and keeps a real U+FFFD', async () => {
    const { store, deps } = fakeDeps();
    const body = Buffer.concat([
      Buffer.from('{"text":"ok"}\n{"text":"bad '),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('"}\n{"text":"nul \\u0000 here"}\n{"text":"raw \0 byte"}\n{"text":"a real \uFFFD"}\n'),
    ]);
    await store.put('incoming/bytes.jsonl', body);

    const result = await split(
      { event: { inputKey: 'incoming/bytes.jsonl' }, executionId: 'e', config: deps.config },
      deps,
    );

    const rejects = await readJsonl<Reject>(store, splitRejectsKey(result.runId));
    expect(rejects.map((r) => [r.reason, r.line])).toEqual([
      ['invalid-utf8', 2],
      ['binary-content', 3],
      ['binary-content', 4],
    ]);
    const records = await readJsonl<InputRecord>(store, shardKey(result.runId, '00000', 'split'));
    expect(records.map((r) => [r.text, r.line])).toEqual([
      ['ok', 1],
      ['a real \uFFFD', 5],
    ]);
  });

  it('reads JSONL with a UTF-8 BOM and CRLF line ends', async () => {
    const { store, deps } = fakeDeps();

    const result = await putAndSplit(
      deps,
      'windows.jsonl',
      '\uFEFF{"id":"a","text":"one"}\r\n\r\n{"id":"b","text":"two"}\r\n',
    );

    const records = await readJsonl<InputRecord>(store, shardKey(result.runId, '00000', 'split'));
    expect(records.map((r) => [r.id, r.text, r.line])).toEqual([
      ['a', 'one', 1],
      ['b', 'two', 3],
    ]);
  });

  it('rejects a CSV record that is not valid UTF-8 and keeps the rest', async () => {
    const { store, deps } = fakeDeps();
    await store.put(
      'incoming/latin1.csv',
      Buffer.concat([Buffer.from('id,text\n1,caf'), Buffer.from([0xe9]), Buffer.from('\n2,tea\n')]),
    );

    const result = await split(
      { event: { inputKey: 'incoming/latin1.csv' }, executionId: 'e', config: deps.config },
      deps,
    );

    const rejects = await readJsonl<Reject>(store, splitRejectsKey(result.runId));
    expect(rejects.map((r) => [r.id, r.reason, r.line])).toEqual([
      [recordIdFor('incoming/latin1.csv', 2), 'invalid-utf8', 2],
    ]);
    const records = await readJsonl<InputRecord>(store, shardKey(result.runId, '00000', 'split'));
    expect(records.map((r) => [r.id, r.text])).toEqual([['2', 'tea']]);
  });

  it('rejects a 100 MB line as line-too-long and keeps the line after it', async () => {
    const { store, deps } = fakeDeps();
    onTestFinished(() => rmSync(store.root, { recursive: true, force: true }));
    const megabyte = 'a'.repeat(MiB);
    await store.putStream(
      'incoming/long.jsonl',
      (async function* () {
        yield '{"text":"before"}\n{"text":"';
        for (let i = 0; i < 100; i++) yield megabyte;
        yield '"}\n{"text":"after"}\n';
      })(),
    );

    const result = await split(
      { event: { inputKey: 'incoming/long.jsonl' }, executionId: 'e', config: deps.config },
      deps,
    );

    const rejects = await readJsonl<Reject>(store, splitRejectsKey(result.runId));
    expect(rejects.map((r) => [r.reason, r.line, r.detail])).toEqual([
      ['line-too-long', 2, `${100 * MiB + 11} bytes, limit ${MiB}`],
    ]);
    const records = await readJsonl<InputRecord>(store, shardKey(result.runId, '00000', 'split'));
    expect(records.map((r) => [r.text, r.line])).toEqual([
      ['before', 1],
      ['after', 3],
    ]);
    expect(result.records).toBe(3);
  });
});

describe('split of an input it cannot read', () => {
  /** The run id split gives an input stored under `key`. */
  const runIdOf = async (store: FsStore, key: string) => runIdFor(key, (await store.head(key))?.etag ?? null);

  it('fails with an InputError naming an empty input', async () => {
    const { deps } = fakeDeps();

    const act = putAndSplit(deps, 'empty.jsonl', '');

    await expect(act).rejects.toThrow(InputError);
    await expect(act).rejects.toThrow(
      /^incoming\/empty\.jsonl: the input is empty; expected JSON Lines or CSV/,
    );
  });

  it('fails with an InputError naming a binary input', async () => {
    const { store, deps } = fakeDeps();
    const png = Buffer.from([
      0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52,
    ]);
    await store.put('incoming/posts.jsonl', png);

    const act = split(
      { event: { inputKey: 'incoming/posts.jsonl' }, executionId: 'e', config: deps.config },
      deps,
    );

    await expect(act).rejects.toThrow(InputError);
    await expect(act).rejects.toThrow(/^incoming\/posts\.jsonl: the input looks like a PNG image, not text/);
  });

  it('fails with an InputError when a CSV holds a header and no rows, leaving no rejects object', async () => {
    const { store, deps } = fakeDeps();

    const act = putAndSplit(deps, 'header.csv', 'id,text\r\n');

    await expect(act).rejects.toThrow(InputError);
    await expect(act).rejects.toThrow(/^incoming\/header\.csv: the input holds no records/);
    const runId = await runIdOf(store, 'incoming/header.csv');
    expect(await store.tryGet(splitRejectsKey(runId))).toBeUndefined();
  });

  it('fails with an InputError when a JSONL input longer than 64 KB holds only blank lines', async () => {
    const { deps } = fakeDeps();

    const act = putAndSplit(deps, 'blank.jsonl', '\n'.repeat(70_000));

    await expect(act).rejects.toThrow(/^incoming\/blank\.jsonl: the input holds no records/);
  });

  it('fails with the InputError of a CSV record too long to read and leaves no rejects object', async () => {
    const { store, deps } = fakeDeps(undefined, { input: { maxLineBytes: 1024 } });
    // Enough rejects before the long record that some were already streamed towards the store.
    const empties = Array.from({ length: 2000 }, (_, i) => `${i},`).join('\n');
    const body = `id,text\n${empties}\nlong,${'x'.repeat(2000)}\nlast,text\n`;

    const act = putAndSplit(deps, 'long.csv', body);

    await expect(act).rejects.toThrow(InputError);
    await expect(act).rejects.toThrow(
      /^incoming\/long\.csv: the CSV record at line 2002 is longer than 1024 bytes/,
    );
    const runId = await runIdOf(store, 'incoming/long.csv');
    expect(await store.tryGet(splitRejectsKey(runId))).toBeUndefined();
  });
});

describe('split started by an S3 event', () => {
  const hello = '{"text":"hello"}\n';
  const event = (key: string, sequencer: string, etag = createHash('md5').update(hello).digest('hex')) => ({
    'detail-type': 'Object Created' as const,
    detail: { bucket: { name: 'b' }, object: { key, etag, sequencer } },
  });

  it('fails with an InputError when the object changed after the event that started the run', async () => {
    const { deps } = fakeDeps();
    await deps.store.put('incoming/a.jsonl', hello);

    const act = split(
      { event: event('incoming/a.jsonl', '01', 'etag-of-an-older-version'), executionId: 'x1', config: {} },
      deps,
    );

    await expect(act).rejects.toThrow(/incoming\/a\.jsonl: the object changed after the run started/);
  });

  it('starts no second run for a redelivered event but a new run for a new upload', async () => {
    const { deps } = fakeDeps();
    await deps.store.put('incoming/a.jsonl', hello);

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
    await deps.store.put('incoming/my posts (1).jsonl', hello);

    const result = await split(
      { event: event('incoming/my+posts+%281%29.jsonl', '01'), executionId: 'x1', config: deps.config },
      deps,
    );

    expect(result.records).toBe(1);
  });
});
