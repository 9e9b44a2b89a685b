import { type AsyncBuffer, parquetReadObjects } from 'hyparquet';
import { ByteWriter, type ColumnSource, ParquetWriter, type SchemaElement } from 'hyparquet-writer';
import { z } from 'zod';
import type { Pair } from '../schemas.js';

/** Rows per row group unless told otherwise: the most pairs `parquetChunks` holds at once. */
export const PARQUET_ROW_GROUP_SIZE = 5_000;

/** One row of the Parquet export: the pair's texts, its judge score and its metadata as JSON text. */
export const ParquetRow = z.object({
  id: z.string().min(1),
  prompt: z.string().min(1),
  chosen: z.string().min(1),
  rejected: z.string().min(1),
  category: z.string().nullable(),
  /** The evaluate stage's score, 1 to 5, or null when the pair carries none. */
  score: z.number().int().nullable(),
  /** `pair.metadata` as JSON text, so a reader needs no nested schema. */
  metadata: z.string(),
});
export type ParquetRow = z.infer<typeof ParquetRow>;

/** The pair as the Parquet export stores it. */
export const toParquetRow = (pair: Pair): ParquetRow => ({
  id: pair.id,
  prompt: pair.prompt,
  chosen: pair.chosen,
  rejected: pair.rejected,
  category: pair.category,
  score: pair.metadata.stages.evaluate?.score ?? null,
  metadata: JSON.stringify(pair.metadata),
});

const text = (name: string, nullable = false): SchemaElement => ({
  name,
  type: 'BYTE_ARRAY',
  converted_type: 'UTF8',
  repetition_type: nullable ? 'OPTIONAL' : 'REQUIRED',
});

/** The file's schema, written out because the writer cannot infer types from zero rows. */
const SCHEMA: SchemaElement[] = [
  { name: 'root', num_children: 7 },
  text('id'),
  text('prompt'),
  text('chosen'),
  text('rejected'),
  text('category', true),
  { name: 'score', type: 'INT32', repetition_type: 'OPTIONAL' },
  text('metadata'),
];

const COLUMNS = ['id', 'prompt', 'chosen', 'rejected', 'category', 'score', 'metadata'] as const;

/**
 * A byte writer whose written bytes can be taken out. The Parquet writer addresses the file by
 * `offset`, which keeps counting; only `index`, the position in the buffer, goes back to zero.
 */
class DrainingWriter extends ByteWriter {
  /** The bytes written since the last drain, copied out of the reused buffer. */
  drain(): Uint8Array {
    const bytes = this.getBytes().slice();
    this.index = 0;
    return bytes;
  }
}

/**
 * The pairs as one Parquet file, in chunks: one chunk per row group, then the footer.
 * Holds at most one row group of pairs and its encoded bytes, however many pairs come in;
 * columns id, prompt, chosen, rejected, category, score (the evaluate score) and metadata (JSON text).
 */
export async function* parquetChunks(
  pairs: AsyncIterable<Pair>,
  options: { rowGroupSize?: number } = {},
): AsyncGenerator<Uint8Array> {
  const rowGroupSize = options.rowGroupSize ?? PARQUET_ROW_GROUP_SIZE;
  if (!Number.isInteger(rowGroupSize) || rowGroupSize < 1) {
    throw new RangeError(`rowGroupSize must be a positive integer, got ${rowGroupSize}`);
  }
  const writer = new DrainingWriter();
  const parquet = new ParquetWriter({ writer, schema: SCHEMA });
  let group: ParquetRow[] = [];
  const writeGroup = async () => {
    const rows = group;
    group = [];
    const columnData: ColumnSource[] = COLUMNS.map((name) => ({ name, data: rows.map((row) => row[name]) }));
    await parquet.write({ columnData, rowGroupSize: rows.length });
    return writer.drain();
  };

  for await (const pair of pairs) {
    group.push(toParquetRow(pair));
    if (group.length >= rowGroupSize) yield await writeGroup();
  }
  if (group.length > 0) yield await writeGroup();
  await parquet.finish();
  yield writer.drain();
}

/** A Parquet file held in memory, as the reader's file-like object, sliced without copying it whole. */
const asyncBuffer = (bytes: Uint8Array | ArrayBuffer): AsyncBuffer => {
  // A plain view: a Buffer's `slice` shares memory, and its `.buffer` may be a whole pool of other bytes.
  const view =
    bytes instanceof Uint8Array
      ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      : new Uint8Array(bytes);
  return { byteLength: view.byteLength, slice: (start, end) => view.slice(start, end).buffer };
};

/**
 * Every row of a Parquet file as a plain object of all its columns, in file order: strings as
 * strings, nulls as null. Validate the rows (for a pairs file, with `ParquetRow`) before trusting them.
 */
export async function readParquetRows(bytes: Uint8Array | ArrayBuffer): Promise<Record<string, unknown>[]> {
  return parquetReadObjects({ file: asyncBuffer(bytes) });
}
