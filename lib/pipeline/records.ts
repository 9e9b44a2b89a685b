import { createHash } from 'node:crypto';

/** A short hex digest, for ids and dedup keys. */
export const shortHash = (value: string, length = 16): string =>
  createHash('sha256').update(value).digest('hex').slice(0, length);

/** A record's stable id when the input gives none: a hash of its source and line. */
export const recordIdFor = (source: string, line: number): string => `r-${shortHash(`${source}\n${line}`)}`;

/**
 * Invisible characters with no place in text: a zero-width space, a word joiner, a byte order mark
 * inside the text, and a zero-width joiner outside the emoji sequences (👩‍💻) and non-Latin scripts that
 * need one. A zero-width non-joiner is left alone: Persian and Indic scripts spell with it.
 */
export const ZERO_WIDTH = new RegExp(
  '[\\u200B\\u2060\\uFEFF]|(?<![\\p{Extended_Pictographic}\\p{Emoji_Modifier}\\p{M}]|(?!\\p{Script=Latin})\\p{L})' +
    '\\u200D',
  'u',
);
/** Control characters other than a newline and a tab. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point.
export const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/u;
const ZERO_WIDTH_ALL = new RegExp(ZERO_WIDTH.source, 'gu');
// NUL stays: split rejects a text holding one as binary content rather than quietly mending it.
// biome-ignore lint/suspicious/noControlCharactersInRegex: removing control characters is the point.
const CONTROL_BUT_NUL = /[\u0001-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/gu;

/**
 * Normalizes text as every stage sees it and as the audit expects it: LF line ends, no invisible or
 * control characters, no spaces before a line break or runs of spaces between words (indentation
 * stays), no outer whitespace, Unicode NFC.
 */
export const normalizeText = (text: string): string =>
  text
    .replace(/\r\n?/g, '\n')
    .replace(ZERO_WIDTH_ALL, '')
    .replace(CONTROL_BUT_NUL, '')
    .replace(/[ \t]+\n/g, '\n')
    .replace(/(\S)[ \t]{2,}(?=\S)/gu, '$1 ')
    .trim()
    .normalize('NFC');

/** A text as compared for sameness: case and runs of whitespace ignored. */
const comparable = (text: string): string => text.toLowerCase().replace(/\s+/g, ' ').trim();

/** The key under which texts count as the same. */
export const dedupKey = (text: string): string => shortHash(comparable(text), 24);

/** Two texts are the same response once normalized for comparison. */
export const sameText = (a: string, b: string): boolean => comparable(a) === comparable(b);

/** A run id readable by people and unique per input object version. */
export function runIdFor(key: string, etag: string | null): string {
  const base = (key.split('/').pop() ?? 'input')
    .replace(/\.[^.]*$/, '')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 40);
  return `${base || 'input'}-${shortHash(`${key}\n${etag ?? ''}`, 10)}`;
}
