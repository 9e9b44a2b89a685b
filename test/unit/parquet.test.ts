import { parquetMetadata } from 'hyparquet';
import { describe, expect, it } from 'vitest';
import {
  ParquetRow,
  parquetChunks,
  readParquetRows,
  toParquetRow,
} from '../../lib/pipeline/export/parquet.js';
import type { Pair } from '../../lib/pipeline/schemas.js';

const HUGE = 'x'.repeat(100 * 1024);

/** Pair `i`: every 7th without a category, every 5th without an evaluate score, pair 3 unicode, pair 4 huge. */
const pairAt = (i: number): Pair => ({
  id: `pair-${i}`,
  prompt: i === 3 ? 'Übersetze 「こんにちは」 👋\nzweite Zeile' : `Instruction ${i}`,
  chosen: i === 4 ? HUGE : `A safe answer ${i}.`,
  rejected: `rejected text ${i}`,
  category: i % 7 === 0 ? null : (['hate', 'illegal', 'nsfw'][i % 3] ?? 'hate'),
  metadata: {
    source: 'incoming/posts.jsonl',
    line: i + 1,
    stages: {
      induce: { model: 'induce-model', template: 'aaa111' },
      ...(i % 5 === 0 ? {} : { evaluate: { model: 'judge', template: 'bbb222', score: (i % 5) + 1 } }),
    },
    input: { lang: i === 3 ? 'de' : 'en' },
  },
});

async function* pairs(count: number): AsyncGenerator<Pair> {
  for (let i = 0; i < count; i++) yield pairAt(i);
}

const collect = async <T>(items: AsyncIterable<T>): Promise<T[]> => {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
};

const concat = (chunks: Uint8Array[]): Uint8Array => {
  const bytes = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
};

describe('parquetChunks', () => {
  it('writes 12,345 pairs as three row groups that read back with the same values in order', async () => {
    // Prepare
    const count = 12_345;

    // Act
    const chunks = await collect(parquetChunks(pairs(count), { rowGroupSize: 5_000 }));
    const file = concat(chunks);
    const rows = await readParquetRows(file);

    // Assess
    expect(parquetMetadata(file).row_groups.map((g) => g.num_rows)).toEqual([5000n, 5000n, 2345n]);
    expect(rows).toHaveLength(count);
    rows.forEach((row, i) => {
      expect(row).toEqual(toParquetRow(pairAt(i)));
    });
    expect(rows[3]?.prompt).toBe('Übersetze 「こんにちは」 👋\nzweite Zeile');
    expect(rows[4]?.chosen).toBe(HUGE);
    expect([rows[0]?.category, rows[0]?.score, rows[1]?.score]).toEqual([null, null, 2]);
  });

  it('yields one chunk per row group and a last one with the footer', async () => {
    // Act
    const chunks = await collect(parquetChunks(pairs(25), { rowGroupSize: 10 }));

    // Assess
    expect(chunks).toHaveLength(4);
    expect(new TextDecoder().decode(chunks[0]?.subarray(0, 4))).toBe('PAR1');
    expect(new TextDecoder().decode(chunks.at(-1)?.subarray(-4))).toBe('PAR1');
  });

  it('pulls no more pairs than one row group before yielding its bytes', async () => {
    // Prepare
    let pulled = 0;
    async function* counted(): AsyncGenerator<Pair> {
      for (let i = 0; i < 30; i++) {
        pulled++;
        yield pairAt(i);
      }
    }
    const chunks = parquetChunks(counted(), { rowGroupSize: 10 });

    // Act
    await chunks.next();
    const pulledForFirst = pulled;
    await chunks.return(undefined);

    // Assess
    expect(pulledForFirst).toBe(10);
  });

  it('writes a valid file with no rows for no pairs', async () => {
    // Act
    const file = concat(await collect(parquetChunks(pairs(0))));

    // Assess
    expect(parquetMetadata(file).num_rows).toBe(0n);
    expect(parquetMetadata(file).schema.map((e) => e.name)).toEqual([
      'root',
      'id',
      'prompt',
      'chosen',
      'rejected',
      'category',
      'score',
      'metadata',
    ]);
    expect(await readParquetRows(file)).toEqual([]);
  });

  it('refuses a row group size that is not a positive integer', async () => {
    // Act
    const attempt = collect(parquetChunks(pairs(1), { rowGroupSize: 0 }));

    // Assess
    await expect(attempt).rejects.toThrow(/rowGroupSize/);
  });
});

describe('readParquetRows', () => {
  it('reads rows that validate as ParquetRow, with the metadata as JSON text of the pair metadata', async () => {
    // Prepare
    const file = concat(await collect(parquetChunks(pairs(3))));

    // Act
    const rows = await readParquetRows(file);

    // Assess
    const parsed = rows.map((row) => ParquetRow.parse(row));
    expect(JSON.parse(parsed[1]?.metadata ?? '')).toEqual(pairAt(1).metadata);
  });

  it('reads a file held in a Buffer that shares its memory with other bytes', async () => {
    // Prepare
    const file = concat(await collect(parquetChunks(pairs(2))));
    const pool = Buffer.concat([Buffer.from('junk before'), file, Buffer.from('junk after')]);
    const view = pool.subarray(11, 11 + file.byteLength);

    // Act
    const rows = await readParquetRows(view);

    // Assess
    expect(rows.map((row) => row.id)).toEqual(['pair-0', 'pair-1']);
  });
});
