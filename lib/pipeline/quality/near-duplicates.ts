/** Options of near-duplicate detection; the defaults match QualityConfig in lib/pipeline/config.ts. */
export interface NearDuplicateOptions {
  /** Jaccard similarity of shingle sets at or above which two texts are near-duplicates, in (0, 1]. */
  readonly threshold: number;
  /** Hash functions per signature (default 128). */
  readonly permutations?: number;
  /** Characters per shingle (default 5). */
  readonly shingleSize?: number;
}

const DEFAULT_PERMUTATIONS = 128;
const DEFAULT_SHINGLE_SIZE = 5;
/** Well past QualityConfig's 512; lshParams' search grows with permutations times their logarithm. */
const MAX_PERMUTATIONS = 4096;
const MAX_SHINGLE_SIZE = 1024;

// Fixed seeds: signatures and band keys must be the same in every process that shares a dataset.
const SHINGLE_SEED = 0x2f6b_9a31;
const MULTIPLIER_SEED = 0x7f4a_7c15;
const GOLDEN_GAMMA = 0x9e37_79b9;
const BAND_SEED = 0x68e3_1da4;
const MAX_INT32 = 0x7fff_ffff;

/** The step of the midpoint rule that integrates the LSH S-curve, as datasketch's `_integration`. */
const INTEGRATION_STEP = 0.001;

const PUNCTUATION_AND_SYMBOLS = /[\p{P}\p{S}]/gu;
/** Runs of whitespace, and single whitespace characters other than a space: a space left alone costs nothing. */
const WHITESPACE_RUN = /\s{2,}|[^\S ]/g;

/** One MurmurHash3 block step of `word` into `h`. */
function mix(h: number, word: number): number {
  let k = Math.imul(word, 0xcc9e_2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b87_3593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe654_6b64) | 0;
}

/** MurmurHash3's finaliser: every input bit affects every output bit. */
function finish(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85eb_ca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2_ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function checkInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max)
    throw new RangeError(`${name} must be a whole number from ${min} to ${max}, not ${value}`);
}

function checkThreshold(threshold: number): void {
  if (!(threshold > 0 && threshold <= 1))
    throw new RangeError(`threshold must be in (0, 1], not ${threshold}`);
}

/** The text as shingled: NFKC, lower case, punctuation and symbols (\p{P}\p{S}) dropped, whitespace runs collapsed to one space, trimmed. */
export function shingleText(text: string): string {
  return text
    .normalize('NFKC')
    .toLowerCase()
    .replace(PUNCTUATION_AND_SYMBOLS, '')
    .replace(WHITESPACE_RUN, ' ')
    .trim();
}

/**
 * A set of 32-bit hashes for one call at a time, reused so that shingling allocates no table per text.
 * A slot is taken when its stamp is the current generation, so emptying the set is one increment.
 */
const scratchSet = { hashes: new Uint32Array(1024), stamps: new Int32Array(1024), generation: 0 };

/** Empties the scratch set, with room for `count` hashes at most half full. */
function clearScratchSet(count: number): void {
  let slots = scratchSet.hashes.length;
  while (slots < count * 2) slots *= 2;
  if (slots !== scratchSet.hashes.length || scratchSet.generation === 0x7fff_ffff) {
    scratchSet.hashes = new Uint32Array(slots);
    scratchSet.stamps = new Int32Array(slots);
    scratchSet.generation = 0;
  }
  scratchSet.generation++;
}

/** Adds the hash to the scratch set; false when it was there already. */
function addToScratchSet(hash: number): boolean {
  const { hashes, stamps, generation } = scratchSet;
  const mask = hashes.length - 1;
  // The hash is a finished one already, so its low bits serve as the slot.
  for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
    if (stamps[slot] !== generation) {
      stamps[slot] = generation;
      hashes[slot] = hash;
      return true;
    }
    if (hashes[slot] === hash) return false;
  }
}

/**
 * 32-bit hashes of the distinct character shingles (by code point) of shingleText(text); a non-empty text shorter than the shingle size is one shingle; an empty one has none.
 * They come in the order of their first shingle; throws a RangeError for a shingle size that is not a whole number from 1 to 1024.
 */
export function shingleHashes(text: string, shingleSize: number = DEFAULT_SHINGLE_SIZE): Uint32Array {
  checkInteger('shingleSize', shingleSize, 1, MAX_SHINGLE_SIZE);
  const shingled = shingleText(text);
  if (shingled === '') return new Uint32Array(0);
  const points = new Int32Array(shingled.length);
  let length = 0;
  for (let i = 0; i < shingled.length; i++) {
    const point = shingled.codePointAt(i) as number;
    points[length++] = point;
    if (point > 0xffff) i++;
  }
  const width = Math.min(shingleSize, length);
  const count = length - width + 1;
  const hashes = new Uint32Array(count);
  clearScratchSet(count);
  let distinct = 0;
  for (let start = 0; start < count; start++) {
    let h = SHINGLE_SEED;
    for (let i = start; i < start + width; i++) h = mix(h, points[i] as number);
    const hash = finish(h ^ width);
    if (addToScratchSet(hash)) hashes[distinct++] = hash;
  }
  return distinct === count ? hashes : hashes.slice(0, distinct);
}

/** Permutation i's odd multiplier at [i], from a fixed seed; grown on demand, never changed. */
let multipliers = new Int32Array(0);

function multipliersFor(permutations: number): Int32Array {
  if (multipliers.length < permutations) {
    multipliers = new Int32Array(permutations);
    for (let i = 0; i < permutations; i++)
      multipliers[i] = finish(Math.imul(i + 1, GOLDEN_GAMMA) ^ MULTIPLIER_SEED) | 1;
  }
  return multipliers;
}

/**
 * Fills `signature` with the MinHash of the shingle hashes: permutation i ranks shingle hash h by
 * (h | 1) * a_i mod 2^32, a_i a fixed random odd multiplier, as a signed 32-bit integer (which keeps
 * V8 in int32 arithmetic). That is one multiplication and one minimum per shingle and permutation.
 *
 * The multipliers give each shingle independent values across permutations. Kirsch-Mitzenmacher
 * double hashing (h1 + i * h2) is as cheap but does not: a shingle whose step h2 lies near a fraction of
 * 2^32 with a small denominator keeps nearly one value across permutations, wins many of them at once,
 * and turned a pair with Jaccard 0.95 into an estimate of 0.66 in our trials. Forcing h odd keeps every
 * product odd, so no hash (0 or 2^31) can take one value under every multiplier.
 *
 * The minima of eight permutations at a time stay in local variables through a pass over the shingles,
 * rather than in the array, which takes a third off the time.
 */
function fillSignature(hashes: Uint32Array, signature: Int32Array): void {
  const count = hashes.length;
  const permutations = signature.length;
  const a = multipliersFor(permutations);
  const blocked = permutations - (permutations % 8);
  for (let first = 0; first < blocked; first += 8) {
    const a0 = a[first] as number;
    const a1 = a[first + 1] as number;
    const a2 = a[first + 2] as number;
    const a3 = a[first + 3] as number;
    const a4 = a[first + 4] as number;
    const a5 = a[first + 5] as number;
    const a6 = a[first + 6] as number;
    const a7 = a[first + 7] as number;
    let m0 = MAX_INT32;
    let m1 = MAX_INT32;
    let m2 = MAX_INT32;
    let m3 = MAX_INT32;
    let m4 = MAX_INT32;
    let m5 = MAX_INT32;
    let m6 = MAX_INT32;
    let m7 = MAX_INT32;
    for (let s = 0; s < count; s++) {
      const h = (hashes[s] as number) | 1;
      m0 = Math.min(m0, Math.imul(h, a0));
      m1 = Math.min(m1, Math.imul(h, a1));
      m2 = Math.min(m2, Math.imul(h, a2));
      m3 = Math.min(m3, Math.imul(h, a3));
      m4 = Math.min(m4, Math.imul(h, a4));
      m5 = Math.min(m5, Math.imul(h, a5));
      m6 = Math.min(m6, Math.imul(h, a6));
      m7 = Math.min(m7, Math.imul(h, a7));
    }
    signature[first] = m0;
    signature[first + 1] = m1;
    signature[first + 2] = m2;
    signature[first + 3] = m3;
    signature[first + 4] = m4;
    signature[first + 5] = m5;
    signature[first + 6] = m6;
    signature[first + 7] = m7;
  }
  for (let i = blocked; i < permutations; i++) {
    const ai = a[i] as number;
    let m = MAX_INT32;
    for (let s = 0; s < count; s++) m = Math.min(m, Math.imul((hashes[s] as number) | 1, ai));
    signature[i] = m;
  }
}

/** The MinHash signature (length `permutations`, a whole number from 1 to 4096). */
export function minhashSignature(
  text: string,
  permutations: number = DEFAULT_PERMUTATIONS,
  shingleSize: number = DEFAULT_SHINGLE_SIZE,
): Uint32Array {
  checkInteger('permutations', permutations, 1, MAX_PERMUTATIONS);
  const signature = new Int32Array(permutations);
  fillSignature(shingleHashes(text, shingleSize), signature);
  return new Uint32Array(signature.buffer);
}

/**
 * The fraction of equal positions of two signatures of the same length: an estimate of Jaccard similarity.
 * Throws a RangeError for signatures of different lengths or of none.
 */
export function estimateSimilarity(a: Uint32Array, b: Uint32Array): number {
  if (a.length !== b.length || a.length === 0)
    throw new RangeError(`signatures must have one non-zero length, not ${a.length} and ${b.length}`);
  let equal = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) equal++;
  return equal / a.length;
}

/** Exact Jaccard similarity of the two texts' shingle sets (1 for two texts that both shingle to nothing). For pairwise checks such as chosen vs rejected. */
export function textSimilarity(a: string, b: string, shingleSize: number = DEFAULT_SHINGLE_SIZE): number {
  const x = shingleHashes(a, shingleSize);
  const y = shingleHashes(b, shingleSize);
  if (x.length === 0 && y.length === 0) return 1;
  clearScratchSet(x.length);
  for (let i = 0; i < x.length; i++) addToScratchSet(x[i] as number);
  let common = 0;
  for (let i = 0; i < y.length; i++) if (!addToScratchSet(y[i] as number)) common++;
  return common / (x.length + y.length - common);
}

const lshParamsCache = new Map<string, { readonly bands: number; readonly rows: number }>();

/** Bands and rows per band (bands * rows <= permutations) minimising weighted false-positive + false-negative probability for the threshold, as datasketch's _optimal_param does (integrate the LSH S-curve numerically; equal weights). */
export function lshParams(threshold: number, permutations: number): { bands: number; rows: number } {
  checkThreshold(threshold);
  checkInteger('permutations', permutations, 1, MAX_PERMUTATIONS);
  const key = `${threshold}/${permutations}`;
  let best = lshParamsCache.get(key);
  if (best === undefined) {
    best = optimalParams(threshold, permutations);
    lshParamsCache.set(key, best);
  }
  return { bands: best.bands, rows: best.rows };
}

/**
 * datasketch's search, with both integrals by the midpoint rule at its step of 0.001. A candidate is
 * banded with probability 1 - (1 - s^rows)^bands; for each `rows`, (1 - s^rows)^bands is kept per
 * midpoint and multiplied up one band at a time, so the search costs no powers in its inner loop.
 */
function optimalParams(threshold: number, permutations: number): { bands: number; rows: number } {
  const below = Math.max(1, Math.round(threshold / INTEGRATION_STEP));
  const above = threshold < 1 ? Math.max(1, Math.round((1 - threshold) / INTEGRATION_STEP)) : 0;
  const belowWidth = threshold / below;
  const aboveWidth = above === 0 ? 0 : (1 - threshold) / above;
  const points = new Float64Array(below + above);
  for (let i = 0; i < below; i++) points[i] = (i + 0.5) * belowWidth;
  for (let i = 0; i < above; i++) points[below + i] = threshold + (i + 0.5) * aboveWidth;
  // The error of (bands, rows) at errors[first[rows] + bands - 1].
  const first = new Int32Array(permutations + 2);
  for (let rows = 1; rows <= permutations; rows++)
    first[rows + 1] = (first[rows] as number) + Math.floor(permutations / rows);
  const errors = new Float64Array(first[permutations + 1] as number);
  const missed = new Float64Array(points.length);
  const notBanded = new Float64Array(points.length);
  for (let rows = 1; rows <= permutations; rows++) {
    for (let i = 0; i < points.length; i++) {
      missed[i] = 1 - (points[i] as number) ** rows;
      notBanded[i] = 1;
    }
    for (let bands = 1; bands * rows <= permutations; bands++) {
      let falsePositive = 0;
      let falseNegative = 0;
      for (let i = 0; i < points.length; i++) {
        const q = (notBanded[i] as number) * (missed[i] as number);
        notBanded[i] = q;
        if (i < below) falsePositive += 1 - q;
        else falseNegative += q;
      }
      errors[(first[rows] as number) + bands - 1] =
        0.5 * falsePositive * belowWidth + 0.5 * falseNegative * aboveWidth;
    }
  }
  // datasketch's order and strict comparison, so that ties go the same way.
  let leastError = Number.POSITIVE_INFINITY;
  let best = { bands: 0, rows: 0 };
  for (let bands = 1; bands <= permutations; bands++) {
    for (let rows = 1; bands * rows <= permutations; rows++) {
      const error = errors[(first[rows] as number) + bands - 1] as number;
      if (error < leastError) {
        leastError = error;
        best = { bands, rows };
      }
    }
  }
  return best;
}

/** How far below the threshold LSH looks for candidates. */
const CANDIDATE_MARGIN = 0.1;
/** The most entries a lookup verifies in one band's bucket, earliest first. */
const MAX_BUCKET_WALK = 32;

/**
 * An index of texts: finds the earliest-added text that is a near-duplicate of a new one.
 *
 * Entries live in typed arrays, so that a hundred thousand of them leave the garbage collector nothing
 * to trace: signatures back to back, and one bucket table keyed by a 32-bit hash of a band's number and
 * rows. Each bucket is a chain of (entry, band) nodes in insertion order, so a lookup stops in each band
 * at the first verified candidate, however many copies of one text were added.
 */
export class NearDuplicateIndex<T> {
  readonly #permutations: number;
  readonly #shingleSize: number;
  readonly #bands: number;
  readonly #rows: number;
  /** The most unequal signature positions an entry may have and still reach the threshold. */
  readonly #maxMismatches: number;
  readonly #values: T[] = [];
  /** Room for this many entries in the typed arrays below before they grow. */
  #capacity = 16;
  #signatures: Int32Array;
  /** Per entry, the last lookup that verified it, so a lookup verifies an entry once across bands. */
  #checked: Int32Array;
  #lookups = 0;
  /** Per node (entry * bands + band), the next node of its bucket, or -1. */
  #next: Int32Array;
  /** Three words a slot: the band key, first node + 1 (zero marks an empty slot), last node. */
  #slots = new Int32Array(256 * 3);
  #usedSlots = 0;
  readonly #signature: Int32Array;
  readonly #bandKeys: Int32Array;

  /** An empty index; throws a RangeError for options out of range. */
  constructor(options: NearDuplicateOptions) {
    const { threshold, permutations = DEFAULT_PERMUTATIONS, shingleSize = DEFAULT_SHINGLE_SIZE } = options;
    checkThreshold(threshold);
    checkInteger('permutations', permutations, 1, MAX_PERMUTATIONS);
    checkInteger('shingleSize', shingleSize, 1, MAX_SHINGLE_SIZE);
    this.#permutations = permutations;
    this.#shingleSize = shingleSize;
    // Candidates are verified against the threshold, so LSH may cast a wider net: tuned at the
    // threshold itself, it finds fewer than half of the pairs just above it.
    const { bands, rows } = lshParams(Math.max(0.05, threshold - CANDIDATE_MARGIN), permutations);
    this.#bands = bands;
    this.#rows = rows;
    let mismatches = 0;
    while (mismatches < permutations && (permutations - mismatches - 1) / permutations >= threshold)
      mismatches++;
    this.#maxMismatches = mismatches;
    this.#signatures = new Int32Array(this.#capacity * permutations);
    this.#next = new Int32Array(this.#capacity * bands);
    this.#checked = new Int32Array(this.#capacity);
    this.#signature = new Int32Array(permutations);
    this.#bandKeys = new Int32Array(bands);
  }

  /** The earliest-added entry whose estimated similarity to `text` is >= threshold (LSH candidates verified against stored signatures), or undefined. A text that shingles to nothing matches nothing. */
  find(text: string): { value: T; similarity: number } | undefined {
    return this.#sign(text) ? this.#find() : undefined;
  }

  /** Adds a text with its value (texts that shingle to nothing are not added). */
  add(text: string, value: T): void {
    if (this.#sign(text)) this.#add(value);
  }

  /** find(), and add() when nothing was found: returns what find() returned. One signature computation. */
  claim(text: string, value: T): { value: T; similarity: number } | undefined {
    if (!this.#sign(text)) return undefined;
    const found = this.#find();
    if (found === undefined) this.#add(value);
    return found;
  }

  /** Entries added. */
  get size(): number {
    return this.#values.length;
  }

  /** Computes the text's signature and band keys into the scratch arrays; false when it has no shingles. */
  #sign(text: string): boolean {
    const hashes = shingleHashes(text, this.#shingleSize);
    if (hashes.length === 0) return false;
    const signature = this.#signature;
    fillSignature(hashes, signature);
    const rows = this.#rows;
    for (let band = 0; band < this.#bands; band++) {
      let h = Math.imul(band + 1, BAND_SEED);
      for (let i = band * rows; i < (band + 1) * rows; i++) h = mix(h, signature[i] as number);
      this.#bandKeys[band] = finish(h ^ rows) | 0;
    }
    return true;
  }

  #find(): { value: T; similarity: number } | undefined {
    const slots = this.#slots;
    const next = this.#next;
    const bands = this.#bands;
    const checked = this.#checked;
    const lookup = ++this.#lookups;
    let best = -1;
    let bestEqual = 0;
    for (let band = 0; band < bands; band++) {
      const at = this.#slotOf(this.#bandKeys[band] as number);
      let walked = 0;
      for (let node = (slots[at + 1] as number) - 1; node !== -1; node = next[node] as number) {
        const entry = (node / bands) | 0;
        if (best !== -1 && entry >= best) break;
        // Texts alike but below the threshold crowd the same buckets: without a bound, each lookup
        // would verify all of them and a run of templated texts would take quadratic time. An entry
        // deep in a crowded bucket can still be found through its other bands.
        if (++walked > MAX_BUCKET_WALK) break;
        if (checked[entry] === lookup) continue;
        checked[entry] = lookup;
        const equal = this.#equalPositions(entry);
        if (equal !== -1) {
          best = entry;
          bestEqual = equal;
          break;
        }
      }
    }
    if (best === -1) return undefined;
    return { value: this.#values[best] as T, similarity: bestEqual / this.#permutations };
  }

  /** Positions where the entry's signature equals the scratch one, or -1 when too few to reach the threshold. */
  #equalPositions(entry: number): number {
    const permutations = this.#permutations;
    const signatures = this.#signatures;
    const signature = this.#signature;
    const maxMismatches = this.#maxMismatches;
    const base = entry * permutations;
    let mismatches = 0;
    for (let i = 0; i < permutations; i++)
      if (signatures[base + i] !== signature[i] && ++mismatches > maxMismatches) return -1;
    return permutations - mismatches;
  }

  #add(value: T): void {
    const entry = this.#values.length;
    if (entry === this.#capacity) this.#grow();
    this.#values.push(value);
    this.#signatures.set(this.#signature, entry * this.#permutations);
    const bands = this.#bands;
    for (let band = 0; band < bands; band++) {
      const node = entry * bands + band;
      this.#next[node] = -1;
      const key = this.#bandKeys[band] as number;
      const slots = this.#slots;
      const at = this.#slotOf(key);
      if (slots[at + 1] === 0) {
        slots[at] = key;
        slots[at + 1] = node + 1;
        slots[at + 2] = node;
        // Linear probing stays short while at most half the slots are taken.
        if (++this.#usedSlots * 2 > slots.length / 3) this.#growSlots();
      } else {
        this.#next[slots[at + 2] as number] = node;
        slots[at + 2] = node;
      }
    }
  }

  /** The offset of the slot holding `key`, or of the empty slot where it would go. */
  #slotOf(key: number): number {
    const slots = this.#slots;
    const mask = slots.length / 3 - 1;
    // The key is a finished hash already, so its low bits serve as the slot.
    for (let slot = key & mask; ; slot = (slot + 1) & mask) {
      const at = slot * 3;
      if (slots[at + 1] === 0 || slots[at] === key) return at;
    }
  }

  #grow(): void {
    // Growing by half rather than doubling keeps the unused tail of the arrays small.
    this.#capacity = Math.ceil(this.#capacity * 1.5);
    const signatures = new Int32Array(this.#capacity * this.#permutations);
    signatures.set(this.#signatures);
    this.#signatures = signatures;
    const next = new Int32Array(this.#capacity * this.#bands);
    next.set(this.#next);
    this.#next = next;
    const checked = new Int32Array(this.#capacity);
    checked.set(this.#checked);
    this.#checked = checked;
  }

  #growSlots(): void {
    const old = this.#slots;
    this.#slots = new Int32Array(old.length * 2);
    for (let at = 0; at < old.length; at += 3) {
      if (old[at + 1] === 0) continue;
      const to = this.#slotOf(old[at] as number);
      this.#slots[to] = old[at] as number;
      this.#slots[to + 1] = old[at + 1] as number;
      this.#slots[to + 2] = old[at + 2] as number;
    }
  }
}
