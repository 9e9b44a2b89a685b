import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { parse } from 'csv-parse';
import { InputError } from './errors.js';

/** One raw row of input: its fields with the line it starts on, or why it could not be read. */
export type RawRow =
  | { readonly line: number; readonly fields: Record<string, unknown> }
  | { readonly line: number; readonly error: { reason: string; detail: string } };

/** The input formats split reads. */
export type InputFormat = 'jsonl' | 'csv';

/** Picks the format from the configured one, else from the key's extension. */
export function formatOf(key: string, configured: 'auto' | InputFormat): InputFormat {
  if (configured !== 'auto') return configured;
  return /\.(csv|tsv)$/i.test(key) ? 'csv' : 'jsonl';
}

/** The CSV field delimiter: a tab for `.tsv` files, else a comma. */
export const delimiterOf = (key: string): string => (/\.tsv$/i.test(key) ? '\t' : ',');

const BOM = '\uFEFF';

/** Reads JSON Lines, one object per line; blank lines are skipped, bad lines become errors. */
export async function* readJsonl(stream: Readable): AsyncGenerator<RawRow> {
  const lines = createInterface({ input: stream.setEncoding('utf8'), crlfDelay: Number.POSITIVE_INFINITY });
  let line = 0;
  for await (let text of lines) {
    line++;
    if (line === 1 && text.startsWith(BOM)) text = text.slice(1);
    if (text.trim() === '') continue;
    if (text.includes('\0')) {
      yield { line, error: { reason: 'binary-content', detail: 'the line holds NUL bytes' } };
      continue;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      yield { line, error: { reason: 'invalid-json', detail: (error as Error).message.slice(0, 200) } };
      continue;
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      yield { line, error: { reason: 'not-an-object', detail: 'each line must be a JSON object' } };
      continue;
    }
    yield { line, fields: value as Record<string, unknown> };
  }
}

/**
 * Reads CSV (or TSV) with a header row; quoted fields may span lines and stray quotes are kept as text.
 * A record the parser cannot read (a quote never closed) becomes an error row at the line it starts on.
 * A header without `requiredColumn` is an InputError naming the file and the columns it has.
 */
export async function* readCsv(
  stream: Readable,
  source: string,
  requiredColumn: string,
  delimiter = ',',
): AsyncGenerator<RawRow> {
  const parser = stream.pipe(
    parse({
      bom: true,
      delimiter,
      columns: (header: string[]) => {
        const columns = header.map((h) => h.trim());
        if (!columns.includes(requiredColumn))
          throw new InputError(
            `${source}: no column "${requiredColumn}" in the header (columns: ${columns.join(', ')}); ` +
              'choose one with --text-field',
          );
        return columns;
      },
      relax_quotes: true,
      relax_column_count: true,
      skip_empty_lines: true,
      skip_records_with_error: true,
      info: true,
      raw: true,
    }),
  );
  // Skips arrive as events, ahead of the records before them: order both by where they end in the input.
  const skipped: { bytes: number; raw: string; message: string }[] = [];
  parser.on('skip', (error: Error & { bytes?: number; raw?: string }) => {
    skipped.push({
      bytes: error.bytes ?? Number.MAX_SAFE_INTEGER,
      raw: error.raw ?? '',
      message: error.message,
    });
  });
  // csv-parse's own line count drifts with CRLF input; count the breaks in each record's raw text instead.
  let breaks = 0;
  const place = (raw: string) => {
    const line = 2 + breaks + breaksIn(/^[\r\n]*/.exec(raw)?.[0] ?? '');
    breaks += breaksIn(raw);
    return line;
  };
  const skip = (s: (typeof skipped)[number]): RawRow => ({
    line: place(s.raw),
    error: { reason: 'invalid-csv', detail: s.message.slice(0, 200) },
  });
  try {
    for await (const { record, raw, info } of parser as AsyncIterable<{
      record: Record<string, unknown>;
      raw: string;
      info: { bytes: number };
    }>) {
      while (
        skipped.length &&
        (skipped[0] as (typeof skipped)[number]).bytes <= info.bytes - Buffer.byteLength(raw)
      )
        yield skip(skipped.shift() as (typeof skipped)[number]);
      yield { line: place(raw), fields: record };
    }
  } catch (error) {
    if (error instanceof InputError) throw error;
    const e = error as Error & { lines?: number };
    throw new InputError(`${source}: unreadable CSV at line ${e.lines ?? '?'}: ${e.message}`, {
      cause: error,
    });
  }
  while (skipped.length) yield skip(skipped.shift() as (typeof skipped)[number]);
}

const BREAKS = /\r\n|\r|\n/g;
const breaksIn = (text: string) => text.match(BREAKS)?.length ?? 0;

/** Counts newline-terminated lines (plus a final unterminated one) without decoding. */
export async function countLines(stream: Readable): Promise<number> {
  let lines = 0;
  let last = 10;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
    if (chunk.length) last = chunk[chunk.length - 1] as number;
  }
  return last === 10 ? lines : lines + 1;
}
