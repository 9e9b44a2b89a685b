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
 * Reads CSV with a header row; quoted fields may span lines. A header without `requiredColumn`
 * is an InputError naming the file and the columns it has.
 */
export async function* readCsv(
  stream: Readable,
  source: string,
  requiredColumn: string,
): AsyncGenerator<RawRow> {
  const parser = stream.pipe(
    parse({
      bom: true,
      columns: (header: string[]) => {
        const columns = header.map((h) => h.trim());
        if (!columns.includes(requiredColumn))
          throw new InputError(
            `${source}: no column "${requiredColumn}" in the CSV header (columns: ${columns.join(', ')}); ` +
              'choose one with --text-field',
          );
        return columns;
      },
      relax_column_count: true,
      skip_empty_lines: true,
      skip_records_with_error: true,
      info: true,
      raw: true,
    }),
  );
  const skipped: RawRow[] = [];
  parser.on('skip', (error: Error & { lines?: number }) => {
    skipped.push({
      line: error.lines ?? 0,
      error: { reason: 'invalid-csv', detail: error.message.slice(0, 200) },
    });
  });
  // csv-parse's own line count drifts with CRLF input; count the breaks in each record's raw text instead.
  const BREAKS = /\r\n|\r|\n/g;
  const breaksIn = (text: string) => text.match(BREAKS)?.length ?? 0;
  let breaks = 0;
  try {
    for await (const { record, raw } of parser as AsyncIterable<{
      record: Record<string, unknown>;
      raw: string;
    }>) {
      while (skipped.length) yield skipped.shift() as RawRow;
      const leading = breaksIn(/^[\r\n]*/.exec(raw)?.[0] ?? '');
      yield { line: 2 + breaks + leading, fields: record };
      breaks += breaksIn(raw);
    }
  } catch (error) {
    if (error instanceof InputError) throw error;
    const e = error as Error & { code?: string; lines?: number };
    throw new InputError(`${source}: unreadable CSV at line ${e.lines ?? '?'}: ${e.message}`, {
      cause: error,
    });
  }
  while (skipped.length) yield skipped.shift() as RawRow;
}

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
