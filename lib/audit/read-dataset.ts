import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { parse as parseCsvSync } from 'csv-parse/sync';
import { parquetMetadata, parquetReadObjects, parquetSchema } from 'hyparquet';
import { InputError } from '../pipeline/errors.js';
import { type RawRow, readCsv, readJsonl, sniffInput } from '../pipeline/input.js';

/** The formats a preference dataset may come in. */
export const DATASET_FORMATS = ['jsonl', 'csv', 'tsv', 'parquet'] as const;
export type DatasetFormat = (typeof DATASET_FORMATS)[number];

/** The format a file's extension names: `.csv`, `.tsv`, `.parquet` (or `.pq`), else JSON Lines. */
export function datasetFormatOf(path: string): DatasetFormat {
  if (/\.csv$/i.test(path)) return 'csv';
  if (/\.tsv$/i.test(path)) return 'tsv';
  if (/\.(parquet|pq)$/i.test(path)) return 'parquet';
  return 'jsonl';
}

/** Field (or column) names a user gives; the ones left out are found in the data. */
export interface FieldNames {
  readonly prompt?: string;
  readonly chosen?: string;
  readonly rejected?: string;
  readonly category?: string;
}

/** The fields a dataset is read with; `category` is undefined when the data has none. */
export interface ResolvedFields {
  readonly prompt: string;
  readonly chosen: string;
  readonly rejected: string;
  readonly category: string | undefined;
}

/** One preference pair as the dataset holds it, texts untouched. */
export interface DatasetPair {
  readonly prompt: string;
  readonly chosen: string;
  readonly rejected: string;
  /** The row's category, or undefined when the dataset has none or the row leaves it blank. */
  readonly category: string | undefined;
}

/**
 * One row of a dataset: a pair at its line, or why the row is not one. Lines count from 1; a CSV's
 * header is line 1, and a Parquet row's line is its position in the file, from 1.
 */
export type DatasetEntry =
  | { readonly line: number; readonly pair: DatasetPair }
  | { readonly line: number; readonly error: { readonly reason: string; readonly detail: string } };

/** A dataset opened for reading: its format, the fields found, and its rows, which can be read once. */
export interface Dataset {
  readonly path: string;
  readonly format: DatasetFormat;
  readonly fields: ResolvedFields;
  readonly entries: AsyncIterable<DatasetEntry>;
}

/** Options of {@link openDataset}. */
export interface OpenDatasetOptions {
  /** The format; from the file's extension when left out. */
  readonly format?: DatasetFormat;
  readonly fields?: FieldNames;
  /** A longer JSON Lines line is a malformed row; a longer CSV record stops the read. */
  readonly maxLineBytes: number;
}

/** The prompt column the released Safer-Instruct CSVs use, and the category column they use. */
const PROMPT_FIELDS = ['prompt', 'instruction'] as const;
const CATEGORY_FIELDS = ['category', 'label'] as const;

/**
 * Opens a preference dataset in JSON Lines, CSV, TSV or Parquet and finds its fields: `prompt`, else
 * `instruction`; `chosen`; `rejected`; `category`, else `label`, else none. Names given in `fields`
 * win. JSON Lines and CSV stream; Parquet is read whole. Throws an InputError naming the file when it
 * is missing, unreadable, empty, not in the format, or lacks a column it needs; the rows come later,
 * each a pair or a malformed row, and reading them throws an InputError when there are none.
 */
export async function openDataset(path: string, options: OpenDatasetOptions): Promise<Dataset> {
  const info = await stat(path).catch((error: NodeJS.ErrnoException) => {
    throw new InputError(
      error.code === 'ENOENT' ? `${path}: no such file` : `${path}: cannot read it (${error.code ?? error})`,
    );
  });
  if (!info.isFile()) throw new InputError(`${path}: not a file`);
  const handle = await open(path, 'r').catch(unreadable(path));
  await handle.close();
  const format = options.format ?? datasetFormatOf(path);
  const given = options.fields ?? {};
  let opened: { fields: ResolvedFields; rows: AsyncIterable<RawRow> };
  if (format === 'parquet') opened = await openParquet(path, given);
  else {
    await sniffInput(createReadStream(path), path).catch(rethrowUnreadable(path));
    opened =
      format === 'jsonl'
        ? await openJsonl(path, given, options)
        : await openCsv(path, given, format === 'tsv' ? '\t' : ',', options);
  }
  return { path, format, fields: opened.fields, entries: pairsOf(path, opened.rows, opened.fields) };
}

const unreadable = (path: string) => (error: NodeJS.ErrnoException) => {
  throw new InputError(`${path}: cannot read it (${error.code ?? error.message})`);
};

const rethrowUnreadable = (path: string) => (error: unknown) => {
  if (error instanceof InputError) throw error;
  return unreadable(path)(error as NodeJS.ErrnoException);
};

/** The fields to read, from the names given, else from the columns (or first row's keys) present. */
function resolveFields(
  path: string,
  given: FieldNames,
  present: readonly string[],
  noun: string,
): ResolvedFields {
  const has = (name: string) => present.includes(name);
  const listed = `(${noun}s: ${present.join(', ') || 'none'})`;
  const prompt = given.prompt ?? PROMPT_FIELDS.find(has);
  if (prompt === undefined)
    throw new InputError(
      `${path}: no ${noun} "prompt" or "instruction" ${listed}; choose one with --prompt-field`,
    );
  const category = given.category ?? CATEGORY_FIELDS.find(has);
  return {
    prompt,
    chosen: given.chosen ?? 'chosen',
    rejected: given.rejected ?? 'rejected',
    category,
  };
}

/** Throws when a column the fields name is not among the columns: every row would be malformed. */
function requireColumns(path: string, fields: ResolvedFields, columns: readonly string[]): void {
  const wanted: [string, string | undefined][] = [
    ['--prompt-field', fields.prompt],
    ['--chosen-field', fields.chosen],
    ['--rejected-field', fields.rejected],
    ['--category-field', fields.category],
  ];
  for (const [flag, name] of wanted)
    if (name !== undefined && !columns.includes(name))
      throw new InputError(
        `${path}: no column "${name}" (columns: ${columns.join(', ') || 'none'}); choose one with ${flag}`,
      );
}

async function openCsv(
  path: string,
  given: FieldNames,
  delimiter: string,
  options: OpenDatasetOptions,
): Promise<{ fields: ResolvedFields; rows: AsyncIterable<RawRow> }> {
  const columns = await csvHeader(path, delimiter);
  const fields = resolveFields(path, given, columns, 'column');
  requireColumns(path, fields, columns);
  const rows = readCsv(createReadStream(path), path, fields.prompt, {
    delimiter,
    maxLineBytes: options.maxLineBytes,
  });
  return { fields, rows };
}

/** How much of a CSV is read to find its header. */
const HEADER_BYTES = 256 * 1024;

/** A CSV's header names, trimmed as readCsv trims them, from the start of the file. */
async function csvHeader(path: string, delimiter: string): Promise<string[]> {
  const handle = await open(path, 'r').catch(unreadable(path));
  try {
    const buffer = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, HEADER_BYTES, 0);
    const records = parseCsvSync(buffer.subarray(0, bytesRead), {
      bom: true,
      delimiter,
      to: 1,
      relax_quotes: true,
      relax_column_count: true,
    }) as string[][];
    return (records[0] ?? []).map((name) => name.trim());
  } catch (error) {
    throw new InputError(`${path}: cannot read a CSV header: ${(error as Error).message.split('\n')[0]}`);
  } finally {
    await handle.close();
  }
}

async function openJsonl(
  path: string,
  given: FieldNames,
  options: OpenDatasetOptions,
): Promise<{ fields: ResolvedFields; rows: AsyncIterable<RawRow> }> {
  const reader = readJsonl(createReadStream(path), { maxLineBytes: options.maxLineBytes });
  // The fields come from the first object in the file, so read up to it and replay what was read.
  const ahead: RawRow[] = [];
  let first: Record<string, unknown> | undefined;
  for (;;) {
    const next = await reader.next().catch(rethrowUnreadable(path));
    if (next.done) break;
    ahead.push(next.value);
    if ('fields' in next.value) {
      first = next.value.fields;
      break;
    }
  }
  // With no object to look at, every row is malformed and the default names do no harm.
  const fields = first
    ? resolveFields(path, given, Object.keys(first), 'field')
    : resolveFields(path, { prompt: 'prompt', ...given }, [], 'field');
  async function* rows(): AsyncGenerator<RawRow> {
    yield* ahead;
    for (;;) {
      const next = await reader.next().catch(rethrowUnreadable(path));
      if (next.done) return;
      yield next.value;
    }
  }
  return { fields, rows: rows() };
}

async function openParquet(
  path: string,
  given: FieldNames,
): Promise<{ fields: ResolvedFields; rows: AsyncIterable<RawRow> }> {
  const bytes = await readFile(path).catch(unreadable(path));
  const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let columns: string[];
  let objects: Record<string, unknown>[];
  try {
    columns = parquetSchema(parquetMetadata(file)).children.map((child) => child.element.name);
    objects = await parquetReadObjects({ file });
  } catch (error) {
    throw new InputError(`${path}: not a readable Parquet file (${(error as Error).message.split('\n')[0]})`);
  }
  const fields = resolveFields(path, given, columns, 'column');
  requireColumns(path, fields, columns);
  async function* rows(): AsyncGenerator<RawRow> {
    for (const [i, object] of objects.entries()) yield { line: i + 1, fields: object };
  }
  return { fields, rows: rows() };
}

/** The pairs of raw rows: a field that is missing or not a string makes its row malformed. */
async function* pairsOf(
  path: string,
  rows: AsyncIterable<RawRow>,
  fields: ResolvedFields,
): AsyncGenerator<DatasetEntry> {
  let count = 0;
  try {
    for await (const row of rows) {
      count++;
      yield 'error' in row ? row : toEntry(row.line, row.fields, fields);
    }
  } catch (error) {
    if (error instanceof InputError) throw error;
    throw new InputError(`${path}: cannot read it (${(error as Error).message.split('\n')[0]})`, {
      cause: error,
    });
  }
  if (count === 0) throw new InputError(`${path}: no rows`);
}

const kindOf = (value: unknown) =>
  value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;

function toEntry(line: number, values: Record<string, unknown>, fields: ResolvedFields): DatasetEntry {
  const texts: string[] = [];
  for (const name of [fields.prompt, fields.chosen, fields.rejected]) {
    const value = values[name];
    if (typeof value === 'string') texts.push(value);
    else
      return {
        line,
        error:
          value === undefined
            ? { reason: 'missing-field', detail: `no field "${name}"` }
            : { reason: 'not-a-string', detail: `"${name}" is ${kindOf(value)}, not a string` },
      };
  }
  const [prompt, chosen, rejected] = texts as [string, string, string];
  const raw = fields.category === undefined ? undefined : values[fields.category];
  if (raw !== undefined && raw !== null && !['string', 'number', 'boolean', 'bigint'].includes(typeof raw))
    return {
      line,
      error: {
        reason: 'not-a-string',
        detail: `"${fields.category}" is ${kindOf(raw)}, not a category name`,
      },
    };
  const category =
    raw === undefined || raw === null || String(raw).trim() === '' ? undefined : String(raw).trim();
  return { line, pair: { prompt, chosen, rejected, category } };
}
