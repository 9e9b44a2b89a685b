import { Readable } from 'node:stream';
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

/** How much of the input {@link sniffInput} looks at. */
export const SNIFF_BYTES = 64 * 1024;

const LF = 0x0a;
const CR = 0x0d;
const UTF8_BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/** Formats whose first bytes can never start text, so they are named whatever follows. */
const SIGNATURES: readonly { name: string; magic: Buffer; advice: string }[] = [
  { name: 'a gzip file', magic: Buffer.from([0x1f, 0x8b]), advice: 'decompress it first' },
  {
    name: 'a zip archive',
    magic: Buffer.from('PK\x03\x04', 'latin1'),
    advice: 'unpack it first; an Excel workbook is a zip archive too: export the sheet as CSV',
  },
  {
    name: 'an xz file',
    magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
    advice: 'decompress it first',
  },
  { name: 'a zstd file', magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), advice: 'decompress it first' },
  { name: 'a PNG image', magic: Buffer.from([0x89, 0x50, 0x4e, 0x47]), advice: 'upload the text itself' },
  { name: 'a JPEG image', magic: Buffer.from([0xff, 0xd8, 0xff]), advice: 'upload the text itself' },
  { name: 'a PDF document', magic: Buffer.from('%PDF-', 'latin1'), advice: 'extract its text first' },
];

/**
 * Looks at the first {@link SNIFF_BYTES} of an input and throws an InputError naming `source` when the
 * input cannot be JSON Lines or CSV at all: empty, UTF-16 or UTF-32, compressed, or otherwise binary.
 * A few NUL or invalid bytes in otherwise good text do not make it binary: their lines become rejects.
 * Destroys the stream once it has seen enough.
 */
export async function sniffInput(stream: Readable, source: string): Promise<void> {
  const { head, whole } = await readHead(stream, SNIFF_BYTES);
  const expected = 'expected JSON Lines or CSV with a header, in UTF-8';
  if (head.length === 0) throw new InputError(`${source}: the input is empty; ${expected}`);
  const wide = wideEncodingOf(head);
  if (wide)
    throw new InputError(`${source}: the input looks like ${wide} text; save it as UTF-8 and try again`);
  const signature = SIGNATURES.find((s) => head.subarray(0, s.magic.length).equals(s.magic));
  if (signature)
    throw new InputError(`${source}: the input looks like ${signature.name}, not text; ${signature.advice}`);
  if (head.includes(0) && nonTextShare(head, whole) > 0.1)
    throw new InputError(
      `${source}: the input looks binary (NUL and other non-text bytes in its first ${SNIFF_BYTES / 1024} KB); ${expected}`,
    );
  const text = startsWith(head, UTF8_BOM) ? head.subarray(UTF8_BOM.length) : head;
  if (whole && text.every(isAsciiSpace)) throw new InputError(`${source}: the input is empty; ${expected}`);
}

/** Up to `limit` bytes from the start of a stream, and whether that was all of it. */
async function readHead(stream: Readable, limit: number): Promise<{ head: Buffer; whole: boolean }> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    length += chunk.length;
    // Leaving the loop early destroys the stream, so the rest of the object is not downloaded.
    if (length >= limit) return { head: Buffer.concat(chunks).subarray(0, limit), whole: false };
  }
  return { head: Buffer.concat(chunks), whole: true };
}

/** 'UTF-16' or 'UTF-32' when a byte order mark or alternating NUL bytes give the encoding away. */
function wideEncodingOf(head: Buffer): string | undefined {
  if (startsWith(head, Buffer.from([0xff, 0xfe, 0, 0])) || startsWith(head, Buffer.from([0, 0, 0xfe, 0xff])))
    return 'UTF-32';
  if (startsWith(head, Buffer.from([0xff, 0xfe])) || startsWith(head, Buffer.from([0xfe, 0xff])))
    return 'UTF-16';
  // Latin text in UTF-16 has a NUL in every other byte, on one side only; binary has them on both.
  let even = 0;
  let odd = 0;
  for (let i = 0; i + 1 < head.length; i += 2) {
    if (head[i] === 0) even++;
    if (head[i + 1] === 0) odd++;
  }
  const pairs = Math.floor(head.length / 2);
  const [more, fewer] = even > odd ? [even, odd] : [odd, even];
  return more >= 4 && more >= pairs * 0.3 && fewer <= more * 0.05 ? 'UTF-16' : undefined;
}

const startsWith = (bytes: Buffer, prefix: Buffer) =>
  bytes.length >= prefix.length && bytes.subarray(0, prefix.length).equals(prefix);

/**
 * The share of characters that text does not hold: NULs and other control characters, and bytes that
 * are not UTF-8. Binary has plenty; text with a few broken lines has few, and its lines are rejected.
 */
function nonTextShare(bytes: Buffer, whole: boolean): number {
  const text = new TextDecoder('utf-8').decode(bytes, { stream: !whole });
  let odd = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0xfffd || c === 0x7f || (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0c && c !== 0x0d))
      odd++;
  }
  return text.length === 0 ? 0 : odd / text.length;
}

const isAsciiSpace = (byte: number) => byte === 0x20 || (byte >= 0x09 && byte <= 0x0d);

/** True when the bytes are valid UTF-8 so far: a character they cut off at the end still counts. */
function isUtf8Prefix(bytes: Uint8Array): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes, { stream: true });
    return true;
  } catch {
    return false;
  }
}

/** One line of input: its bytes without the line end, or only its length when that was over the limit. */
export type InputLine =
  | { readonly line: number; readonly bytes: Buffer }
  | { readonly line: number; readonly tooLong: number };

/**
 * Splits a byte stream into lines numbered from 1; LF or CRLF ends a line and a UTF-8 BOM at the start
 * of the stream is dropped. Holds at most `maxLineBytes` (plus one, for a CR) of any line: a longer one
 * is discarded as it streams by and reported with its length, so memory stays bounded on any input.
 */
export async function* readLines(stream: Readable, maxLineBytes: number): AsyncGenerator<InputLine> {
  let line = 0;
  let parts: Buffer[] = [];
  let length = 0;
  let last = -1;
  const take = (piece: Buffer) => {
    if (piece.length === 0) return;
    length += piece.length;
    last = piece[piece.length - 1] as number;
    if (length <= maxLineBytes + 1) parts.push(piece);
    else parts = [];
  };
  const end = (): InputLine => {
    line++;
    const size = last === CR ? length - 1 : length;
    let result: InputLine;
    if (size > maxLineBytes) result = { line, tooLong: size };
    else {
      const bytes = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, length);
      const start = line === 1 && startsWith(bytes, UTF8_BOM) ? UTF8_BOM.length : 0;
      result = { line, bytes: bytes.subarray(start, size) };
    }
    parts = [];
    length = 0;
    last = -1;
    return result;
  };
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    let start = 0;
    for (let i = chunk.indexOf(LF); i >= 0; i = chunk.indexOf(LF, start)) {
      take(chunk.subarray(start, i));
      yield end();
      start = i + 1;
    }
    take(chunk.subarray(start));
  }
  if (length > 0) yield end();
}

/**
 * Reads JSON Lines, one object per line; blank lines are skipped but counted. A line that is too long,
 * not valid UTF-8, holds NUL bytes, or is not a JSON object becomes an error row at its line.
 */
export async function* readJsonl(
  stream: Readable,
  options: { readonly maxLineBytes: number },
): AsyncGenerator<RawRow> {
  // ignoreBOM keeps a U+FEFF that starts a later line as text; readLines drops the file's own BOM.
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  for await (const input of readLines(stream, options.maxLineBytes)) {
    const { line } = input;
    if ('tooLong' in input) {
      yield {
        line,
        error: { reason: 'line-too-long', detail: `${input.tooLong} bytes, limit ${options.maxLineBytes}` },
      };
      continue;
    }
    if (input.bytes.includes(0)) {
      yield { line, error: { reason: 'binary-content', detail: 'the line holds NUL bytes' } };
      continue;
    }
    let text: string;
    try {
      text = decoder.decode(input.bytes);
    } catch {
      yield { line, error: { reason: 'invalid-utf8', detail: describeInvalidUtf8(input.bytes) } };
      continue;
    }
    if (text.trim() === '') continue;
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

/** Where a line stops being UTF-8, found by bisecting its prefixes: only rejected lines pay for it. */
function describeInvalidUtf8(bytes: Buffer): string {
  if (isUtf8Prefix(bytes)) return 'the line ends inside a UTF-8 character';
  let good = 0;
  let bad = bytes.length;
  while (bad - good > 1) {
    const mid = (good + bad) >>> 1;
    if (isUtf8Prefix(bytes.subarray(0, mid))) good = mid;
    else bad = mid;
  }
  return `the line is not valid UTF-8 near byte ${bad}`;
}

/** Options of {@link readCsv}. */
export interface CsvOptions {
  /** The field delimiter. @default ',' */
  readonly delimiter?: string;
  /** A longer record stops the read with an InputError, as the parser cannot find where it ends. */
  readonly maxLineBytes: number;
}

// The CSV parser decodes bytes that are not UTF-8 as U+FFFD. So that a U+FFFD really in the text is
// not taken for one, it travels through the parser as the noncharacter U+FDD0 (same UTF-8 length),
// and is turned back into U+FFFD in the fields. A U+FDD0 in the input itself comes out as U+FFFD.
const REPLACEMENT = Buffer.from('\uFFFD');
const STAND_IN = Buffer.from('\uFDD0');

/** The bytes of `stream` with every UTF-8 U+FFFD swapped for U+FDD0, across chunk boundaries. */
async function* standInForReplacement(stream: Readable): AsyncGenerator<Buffer> {
  let carry: Buffer = Buffer.alloc(0);
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    const bytes = carry.length ? Buffer.concat([carry, chunk]) : chunk;
    // Hold back a tail that may be the start of a U+FFFD completed by the next chunk.
    const last = bytes.length - 1;
    const hold = bytes[last] === 0xef ? 1 : bytes[last - 1] === 0xef && bytes[last] === 0xbf ? 2 : 0;
    carry = Buffer.from(bytes.subarray(bytes.length - hold));
    let out = bytes.subarray(0, bytes.length - hold);
    let at = out.indexOf(REPLACEMENT);
    if (at >= 0) out = Buffer.from(out);
    for (; at >= 0; at = out.indexOf(REPLACEMENT, at + 3)) STAND_IN.copy(out, at);
    if (out.length) yield out;
  }
  if (carry.length) yield carry;
}

const restoreReplacement = (record: Record<string, unknown>): Record<string, unknown> => {
  for (const [key, value] of Object.entries(record))
    if (typeof value === 'string' && value.includes('\uFDD0'))
      record[key] = value.replaceAll('\uFDD0', '\uFFFD');
  return record;
};

/**
 * Reads CSV (or TSV) with a header row; quoted fields may span lines and stray quotes are kept as text.
 * A record the parser cannot read (a quote never closed) becomes an error row at the line it starts on,
 * and so does one with NUL bytes or bytes that are not UTF-8; a U+FFFD character in the text is kept. A header without `requiredColumn`, or a record longer than
 * `maxLineBytes`, is an InputError naming the file.
 */
export async function* readCsv(
  stream: Readable,
  source: string,
  requiredColumn: string,
  options: CsvOptions,
): AsyncGenerator<RawRow> {
  const { delimiter = ',', maxLineBytes } = options;
  let headerRead = false;
  const bytes = Readable.from(standInForReplacement(stream));
  const parser = bytes.pipe(
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
        headerRead = true;
        return columns;
      },
      relax_quotes: true,
      relax_column_count: true,
      skip_empty_lines: true,
      skip_records_with_error: true,
      max_record_size: maxLineBytes,
      info: true,
      raw: true,
    }),
  );
  // Skips arrive as events, ahead of the records before them: order both by where they end in the input.
  type Skip = { bytes: number; raw: string; message: string; tooLong: boolean; inHeader: boolean };
  const skipped: Skip[] = [];
  let stopped = false;
  parser.on('skip', (error: Error & { bytes?: number; raw?: string; code?: string }) => {
    if (stopped) return;
    const tooLong = error.code === 'CSV_MAX_RECORD_SIZE';
    skipped.push({
      bytes: error.bytes ?? Number.MAX_SAFE_INTEGER,
      raw: error.raw ?? '',
      message: error.message,
      tooLong,
      inHeader: !headerRead,
    });
    if (!tooLong) return;
    // Past its record size limit the parser drops the rest of each chunk, so nothing after is
    // trustworthy: stop feeding it, and fail once the records before the long one are through.
    stopped = true;
    bytes.unpipe(parser);
    bytes.destroy();
    stream.destroy();
    parser.end();
  });
  // csv-parse's own line count drifts with CRLF input; count the breaks in each record's raw text instead.
  let breaks = 0;
  const place = (raw: string) => {
    const line = 2 + breaks + breaksIn(/^[\r\n]*/.exec(raw)?.[0] ?? '');
    breaks += breaksIn(raw);
    return line;
  };
  const skip = (s: Skip): RawRow => {
    const line = s.inHeader ? 1 : place(s.raw);
    if (s.tooLong)
      throw new InputError(
        `${source}: the CSV record at line ${line} is longer than ${maxLineBytes} bytes (input.maxLineBytes); ` +
          'look for a quote that is never closed, or raise the limit',
      );
    return { line, error: { reason: 'invalid-csv', detail: s.message.slice(0, 200) } };
  };
  try {
    for await (const { record, raw, info } of parser as AsyncIterable<{
      record: Record<string, unknown>;
      raw: string;
      info: { bytes: number };
    }>) {
      while (skipped.length && (skipped[0] as Skip).bytes <= info.bytes - Buffer.byteLength(raw))
        yield skip(skipped.shift() as Skip);
      const line = place(raw);
      if (raw.includes('\0'))
        yield { line, error: { reason: 'binary-content', detail: 'the record holds NUL bytes' } };
      else if (raw.includes('\uFFFD'))
        yield {
          line,
          error: { reason: 'invalid-utf8', detail: 'the record holds bytes that are not valid UTF-8' },
        };
      else yield { line, fields: restoreReplacement(record) };
    }
    while (skipped.length) yield skip(skipped.shift() as Skip);
  } catch (error) {
    if (error instanceof InputError) throw error;
    const e = error as Error & { lines?: number };
    throw new InputError(`${source}: unreadable CSV at line ${e.lines ?? '?'}: ${e.message}`, {
      cause: error,
    });
  } finally {
    if (!bytes.destroyed) bytes.destroy();
    if (!stream.destroyed) stream.destroy();
  }
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
