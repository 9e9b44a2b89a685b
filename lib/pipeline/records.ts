import { createHash } from 'node:crypto';

/** A short hex digest, for ids and dedup keys. */
export const shortHash = (value: string, length = 16): string =>
  createHash('sha256').update(value).digest('hex').slice(0, length);

/** A record's stable id when the input gives none: a hash of its source and line. */
export const recordIdFor = (source: string, line: number): string => `r-${shortHash(`${source}\n${line}`)}`;

/** Normalizes text as every stage sees it: NFC, LF line ends, no stray outer whitespace. */
export const normalizeText = (text: string): string =>
  text
    .normalize('NFC')
    .replace(/\r\n?/g, '\n')
    .replace(/[ \t]+\n/g, '\n')
    .trim();

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
