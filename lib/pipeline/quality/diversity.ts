import { dedupKey } from '../records.js';

/** A response and how many times it occurs, counting spellings that differ in case or spacing as one. */
export interface FrequentText {
  readonly text: string;
  readonly count: number;
}

/** How varied a set of texts is. */
export interface DiversitySummary {
  /** Texts added. */
  readonly texts: number;
  /** Distinct word unigrams over all unigrams, 0 when there are none. */
  readonly distinct1: number;
  /** Distinct word bigrams over all bigrams, 0 when there are none. */
  readonly distinct2: number;
  /** The most frequent texts, most frequent first; on a tie, the one seen first. */
  readonly top: readonly FrequentText[];
}

/** Options of {@link DiversityTally}. */
export interface DiversityOptions {
  /** How many of the most frequent texts the summary lists. @default 10 */
  readonly top?: number;
  /** The longest a listed text is kept, so memory does not grow with the length of texts. @default 500 */
  readonly maxTextChars?: number;
}

/** Lower-cased words: letters and digits, with inner apostrophes ("don't" is one word). */
const WORD = /[\p{L}\p{N}]+(?:'[\p{L}\p{N}]+)*/gu;

/** The words of a text, a typographic apostrophe read as a straight one. */
const wordsOf = (text: string): string[] => text.toLowerCase().replaceAll('’', "'").match(WORD) ?? [];

/** The MurmurHash3 finalizer: spreads every input bit over the 32 output bits. */
function mix32(h: number): number {
  let x = h;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  return x ^ (x >>> 16);
}

/** FNV-1a of a string's UTF-16 units from `seed`, finalized. */
function hash32(text: string, seed: number): number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return mix32(h);
}

/** Folds the next word's hash into an n-gram's, order-sensitive. */
const fold = (acc: number, next: number): number => mix32(Math.imul(acc, 0x9e3779b1) ^ next);

/**
 * A set of 64-bit keys, each held as two 32-bit halves in typed arrays (open addressing, linear
 * probing). A key is two independent 32-bit hashes of an n-gram, so a collision is unlikely among a
 * billion n-grams, and an entry costs 9 bytes with no boxed number for the collector to trace, where a
 * Set<number> of 52-bit keys costs several times that in heap numbers and several times the time.
 */
class KeySet {
  #hi = new Int32Array(1024);
  #lo = new Int32Array(1024);
  #used = new Uint8Array(1024);
  #size = 0;

  get size(): number {
    return this.#size;
  }

  add(hi: number, lo: number): void {
    const used = this.#used;
    const mask = used.length - 1;
    // The halves are finished hashes already, so the low bits of one serve as the slot.
    for (let slot = lo & mask; ; slot = (slot + 1) & mask) {
      if (used[slot] === 0) {
        used[slot] = 1;
        this.#hi[slot] = hi;
        this.#lo[slot] = lo;
        if (++this.#size * 2 > used.length) this.#grow();
        return;
      }
      if (this.#hi[slot] === hi && this.#lo[slot] === lo) return;
    }
  }

  #grow(): void {
    const [hi, lo, used] = [this.#hi, this.#lo, this.#used];
    this.#hi = new Int32Array(hi.length * 2);
    this.#lo = new Int32Array(lo.length * 2);
    this.#used = new Uint8Array(used.length * 2);
    this.#size = 0;
    for (let i = 0; i < used.length; i++) if (used[i] === 1) this.add(hi[i] as number, lo[i] as number);
  }
}

/** The two hashes of each word of the text last hashed, reused from text to text. */
const scratch = { hi: new Int32Array(256), lo: new Int32Array(256), words: 0 };

function hashWords(text: string): void {
  const words = wordsOf(text);
  if (words.length > scratch.hi.length) {
    let length = scratch.hi.length;
    while (length < words.length) length *= 2;
    scratch.hi = new Int32Array(length);
    scratch.lo = new Int32Array(length);
  }
  for (let i = 0; i < words.length; i++) {
    const word = words[i] as string;
    scratch.hi[i] = hash32(word, 0x2545f491);
    scratch.lo[i] = hash32(word, 0x6b43a9b5);
  }
  scratch.words = words.length;
}

/** Adds the key of every n-gram of the words last hashed to `seen`; returns how many n-grams there were. */
function tallyNgrams(n: number, seen: KeySet): number {
  const { hi: his, lo: los, words } = scratch;
  const count = words - n + 1;
  for (let start = 0; start < count; start++) {
    let hi = n;
    let lo = n;
    for (let i = start; i < start + n; i++) {
      hi = fold(hi, his[i] as number);
      lo = fold(lo, los[i] as number);
    }
    seen.add(hi, lo);
  }
  return Math.max(count, 0);
}

/**
 * Distinct-n of a set of texts (Li et al. 2016): the unique word n-grams over all word n-grams, with
 * words lower-cased and n-grams not crossing from one text into the next. 0 when there are none.
 */
export function distinctNgramRatio(texts: Iterable<string>, n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a whole number of at least 1, not ${n}`);
  const seen = new KeySet();
  let total = 0;
  for (const text of texts) {
    hashWords(text);
    total += tallyNgrams(n, seen);
  }
  return total === 0 ? 0 : seen.size / total;
}

/**
 * Tallies the diversity of a stream of texts (chosen responses) in one pass: distinct-1, distinct-2,
 * and the most frequent texts, grouped as the pipeline deduplicates them (case and runs of whitespace
 * ignored), each shown in the first spelling seen. N-grams are kept as pairs of 32-bit hashes, so
 * memory grows with distinct n-grams (9 bytes each) and distinct texts (a key and at most
 * `maxTextChars`), not with the texts themselves.
 */
export class DiversityTally {
  readonly #top: number;
  readonly #maxTextChars: number;
  readonly #unigrams = new KeySet();
  readonly #bigrams = new KeySet();
  readonly #counts = new Map<string, { text: string; count: number }>();
  #texts = 0;
  #totalUnigrams = 0;
  #totalBigrams = 0;

  constructor(options: DiversityOptions = {}) {
    this.#top = options.top ?? 10;
    this.#maxTextChars = options.maxTextChars ?? 500;
  }

  /** Counts one text; `key` is its {@link dedupKey}, for a caller that has it already. */
  add(text: string, key: string = dedupKey(text)): void {
    this.#texts++;
    hashWords(text);
    this.#totalUnigrams += tallyNgrams(1, this.#unigrams);
    this.#totalBigrams += tallyNgrams(2, this.#bigrams);
    const entry = this.#counts.get(key);
    if (entry) entry.count++;
    // A slice would keep the whole text alive in V8; the buffer round trip stores a copy of the prefix.
    else this.#counts.set(key, { text: Buffer.from(text.slice(0, this.#maxTextChars)).toString(), count: 1 });
  }

  /** The figures so far. */
  summary(): DiversitySummary {
    // Map order is first-seen order and sort is stable, so on a tie the text seen first stays ahead.
    const top = [...this.#counts.values()]
      .sort((a, b) => b.count - a.count)
      .slice(0, this.#top)
      .map(({ text, count }) => ({ text, count }));
    return {
      texts: this.#texts,
      distinct1: this.#totalUnigrams === 0 ? 0 : this.#unigrams.size / this.#totalUnigrams,
      distinct2: this.#totalBigrams === 0 ? 0 : this.#bigrams.size / this.#totalBigrams,
      top,
    };
  }
}
