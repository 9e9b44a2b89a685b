import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../lib/pipeline/errors.js';
import {
  type InputLine,
  type RawRow,
  readCsv,
  readJsonl,
  readLines,
  SNIFF_BYTES,
  sniffInput,
} from '../../lib/pipeline/input.js';

const MiB = 1024 * 1024;

/** A byte stream of the given chunks, each kept as its own chunk. */
const streamOf = (...chunks: (string | number[] | Buffer)[]) =>
  Readable.from(chunks.map((c) => (typeof c === 'string' ? Buffer.from(c) : Buffer.from(c))));

/** `before`, then `megabytes` MiB of 'a' with no line end, then `after`, without holding it all at once. */
function hugeLine(before: string, megabytes: number, after: string): Readable {
  const megabyte = Buffer.alloc(MiB, 'a');
  return Readable.from(
    (function* () {
      yield Buffer.from(before);
      for (let i = 0; i < megabytes; i++) yield megabyte;
      yield Buffer.from(after);
    })(),
  );
}

const collect = async <T>(rows: AsyncIterable<T>): Promise<T[]> => {
  const all: T[] = [];
  for await (const row of rows) all.push(row);
  return all;
};

const jsonlRows = (stream: Readable, maxLineBytes = MiB) => collect(readJsonl(stream, { maxLineBytes }));
const csvRows = (stream: Readable, maxLineBytes = MiB) =>
  collect(readCsv(stream, 'incoming/posts.csv', 'text', { maxLineBytes }));

/** Each row as [line, text] or [line, reason, detail]. */
const summary = (rows: RawRow[]) =>
  rows.map((r) => ('error' in r ? [r.line, r.error.reason, r.error.detail] : [r.line, r.fields.text]));

describe('readLines', () => {
  it('ends lines at LF or CRLF without their line ends, even when a chunk splits the CRLF', async () => {
    const stream = streamOf('ab\r', '\ncd\n', 'e', 'f');

    const lines = await collect(readLines(stream, 1024));

    expect(lines.map((l) => ('bytes' in l ? [l.line, l.bytes.toString()] : [l.line, l.tooLong]))).toEqual([
      [1, 'ab'],
      [2, 'cd'],
      [3, 'ef'],
    ]);
  });

  it('gives a 100 MB line with no newline at all only as its length', async () => {
    const stream = hugeLine('', 100, '');

    const lines: InputLine[] = await collect(readLines(stream, MiB));

    expect(lines).toEqual([{ line: 1, tooLong: 100 * MiB }]);
  });
});

describe('readJsonl', () => {
  it('numbers lines from 1 across LF and CRLF ends, counting the blank lines it skips', async () => {
    const stream = streamOf('{"text":"a"}\r\n\n  \r\n{"text":"b"}\n{"text":"c"}');

    const rows = await jsonlRows(stream);

    expect(summary(rows)).toEqual([
      [1, 'a'],
      [4, 'b'],
      [5, 'c'],
    ]);
  });

  it('drops a UTF-8 BOM at the start of the file, even when a chunk splits it', async () => {
    const stream = streamOf([0xef], [0xbb, 0xbf], '{"text":"a"}\n');

    const rows = await jsonlRows(stream);

    expect(summary(rows)).toEqual([[1, 'a']]);
  });

  it('rejects a line that is not valid UTF-8 with its line and about where the bad bytes are', async () => {
    const stream = streamOf('{"text":"ok"}\n{"text":"caf', [0xe9], '"}\n{"text":"after"}\n');

    const rows = await jsonlRows(stream);

    expect(summary(rows)).toEqual([
      [1, 'ok'],
      [2, 'invalid-utf8', 'the line is not valid UTF-8 near byte 14'],
      [3, 'after'],
    ]);
  });

  it('keeps a U+FFFD character that is really in the text', async () => {
    const stream = streamOf('{"text":"\uFFFD is a real character"}\n');

    const rows = await jsonlRows(stream);

    expect(summary(rows)).toEqual([[1, '\uFFFD is a real character']]);
  });

  it('rejects a line holding NUL bytes as binary content', async () => {
    const stream = streamOf('{"text":"a\0b"}\n{"text":"c"}\n');

    const rows = await jsonlRows(stream);

    expect(summary(rows)).toEqual([
      [1, 'binary-content', 'the line holds NUL bytes'],
      [2, 'c'],
    ]);
  });

  it('rejects a 100 MB line as line-too-long and reads the line after it', async () => {
    const stream = hugeLine('{"text":"first"}\n{"text":"', 100, '"}\n{"text":"after"}\n');

    const rows = await jsonlRows(stream);

    expect(summary(rows)).toEqual([
      [1, 'first'],
      [2, 'line-too-long', `${100 * MiB + 11} bytes, limit ${MiB}`],
      [3, 'after'],
    ]);
  });

  it('accepts a line of exactly maxLineBytes before its CRLF and rejects one a byte longer', async () => {
    const line = (bytes: number) => `{"text":"${'x'.repeat(bytes - 11)}"}`;
    const stream = streamOf(`${line(1024)}\r\n${line(1025)}\n`);

    const rows = await jsonlRows(stream, 1024);

    expect(rows.map((r) => ('error' in r ? [r.line, r.error.detail] : [r.line, 'read']))).toEqual([
      [1, 'read'],
      [2, '1025 bytes, limit 1024'],
    ]);
  });

  it('reads a million lines with every line number in place', async () => {
    const stream = Readable.from(
      (function* () {
        let batch = '';
        for (let i = 1; i <= 1_000_000; i++) {
          batch += i % 100_000 === 0 ? '{"text":\n' : `{"text":"post ${i}"}\n`;
          if (batch.length >= 65_536) {
            yield Buffer.from(batch);
            batch = '';
          }
        }
        yield Buffer.from(batch);
      })(),
    );

    let rows = 0;
    const errors: number[] = [];
    let last: RawRow | undefined;
    for await (const row of readJsonl(stream, { maxLineBytes: MiB })) {
      rows++;
      if ('error' in row) errors.push(row.line);
      last = row;
    }

    expect(rows).toBe(1_000_000);
    expect(errors).toEqual(Array.from({ length: 10 }, (_, i) => (i + 1) * 100_000));
    expect(last).toEqual({ line: 1_000_000, error: expect.objectContaining({ reason: 'invalid-json' }) });
  });
});

describe('sniffInput', () => {
  const sniff = (...chunks: (string | number[] | Buffer)[]) =>
    sniffInput(streamOf(...chunks), 'incoming/x.jsonl');

  it('fails on an empty input with an InputError naming the file', async () => {
    const act = sniff();

    await expect(act).rejects.toThrow(InputError);
    await expect(act).rejects.toThrow(/^incoming\/x\.jsonl: the input is empty; expected JSON Lines or CSV/);
  });

  it('counts an input of a BOM and blank lines as empty', async () => {
    const act = sniff([0xef, 0xbb, 0xbf], ' \r\n\n\t\n');

    await expect(act).rejects.toThrow(/incoming\/x\.jsonl: the input is empty/);
  });

  it('tells the user to save a UTF-16 input as UTF-8, with or without a byte order mark', async () => {
    const text = Buffer.from('{"text":"hello"}\n', 'utf16le');

    const withMark = sniff([0xff, 0xfe], text);
    const without = sniff(text);

    await expect(withMark).rejects.toThrow(
      /incoming\/x\.jsonl: the input looks like UTF-16 text; save it as UTF-8/,
    );
    await expect(without).rejects.toThrow(
      /incoming\/x\.jsonl: the input looks like UTF-16 text; save it as UTF-8/,
    );
  });

  it('names a PNG image as not text', async () => {
    const png = [
      0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 1, 0,
    ];

    const act = sniff(png);

    await expect(act).rejects.toThrow(InputError);
    await expect(act).rejects.toThrow(/incoming\/x\.jsonl: the input looks like a PNG image, not text/);
  });

  it('names gzip and zip archives by their first bytes', async () => {
    const gzip = sniff([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03]);
    const zip = sniff('PK\x03\x04\x14\0\0\0\x08\0');

    await expect(gzip).rejects.toThrow(/looks like a gzip file, not text; decompress it first/);
    await expect(zip).rejects.toThrow(/looks like a zip archive, not text; .*export the sheet as CSV/);
  });

  it('calls an input binary when NUL and other bytes that are not text make up much of its start', async () => {
    const act = sniff([0x00, 0xc3, 0x28, 0x91, 0x00, 0xff, 0x10, 0x00, 0x9a]);

    await expect(act).rejects.toThrow(
      /incoming\/x\.jsonl: the input looks binary \(NUL and other non-text bytes in its first 64 KB\)/,
    );
  });

  it('lets text with a stray NUL and a stray bad byte through, for their lines to be rejected', async () => {
    const act = sniff('{"text":"a\0"}\n{"text":"', [0xff], '"}\n{"text":"c"}\n');

    await expect(act).resolves.toBeUndefined();
  });

  it('reads only the first 64 KB of a large input', async () => {
    let pulled = 0;
    const stream = Readable.from(
      (function* () {
        for (let i = 0; i < 1000; i++) {
          pulled++;
          yield Buffer.alloc(16 * 1024, 'a');
        }
      })(),
    );

    await sniffInput(stream, 'incoming/x.jsonl');

    expect(pulled * 16 * 1024).toBeLessThan(SNIFF_BYTES * 2);
    expect(stream.destroyed).toBe(true);
  });
});

describe('readCsv', () => {
  it('rejects a record that is not valid UTF-8 at its line and reads the rest', async () => {
    const stream = streamOf('id,text\r\n1,ok\r\n2,caf', [0xe9], '\r\n3,after\r\n');

    const rows = await csvRows(stream);

    expect(summary(rows)).toEqual([
      [2, 'ok'],
      [3, 'invalid-utf8', 'the record holds bytes that are not valid UTF-8'],
      [4, 'after'],
    ]);
  });

  it('keeps a U+FFFD character that is really in the text, even split across chunks', async () => {
    const fffd = [...Buffer.from('\uFFFD')];
    const stream = streamOf(
      'id,text\n1,\uFFFD starts\n2,ends ',
      fffd.slice(0, 1),
      fffd.slice(1),
      '\n3,caf',
      [0xe9],
      '\n',
    );

    const rows = await csvRows(stream);

    expect(summary(rows)).toEqual([
      [2, '\uFFFD starts'],
      [3, 'ends \uFFFD'],
      [4, 'invalid-utf8', 'the record holds bytes that are not valid UTF-8'],
    ]);
  });

  it('rejects a record holding NUL bytes as binary content', async () => {
    const stream = streamOf('id,text\n1,a\0b\n2,c\n');

    const rows = await csvRows(stream);

    expect(summary(rows)).toEqual([
      [2, 'binary-content', 'the record holds NUL bytes'],
      [3, 'c'],
    ]);
  });

  it('fails with an InputError naming the file and line of a 100 MB record', async () => {
    const stream = hugeLine('id,text\r\n1,"two\r\nlines"\r\n2,', 100, '\r\n3,after\r\n');

    const act = csvRows(stream);

    await expect(act).rejects.toThrow(InputError);
    await expect(act).rejects.toThrow(
      /^incoming\/posts\.csv: the CSV record at line 4 is longer than 1048576 bytes \(input\.maxLineBytes\)/,
    );
  });

  it('fails at line 1 when the header itself is longer than maxLineBytes', async () => {
    const stream = streamOf(`id,${'t'.repeat(2000)}\n1,a\n`);

    const act = csvRows(stream, 1024);

    await expect(act).rejects.toThrow(/the CSV record at line 1 is longer than 1024 bytes/);
  });
});
