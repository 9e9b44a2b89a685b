import { describe, expect, it } from 'vitest';
import {
  estimateSimilarity,
  lshParams,
  minhashSignature,
  NearDuplicateIndex,
  shingleHashes,
  shingleText,
  textSimilarity,
} from '../../lib/pipeline/quality/near-duplicates.js';

/** The pipeline's defaults: QualityConfig's threshold 0.8, 128 permutations, 5-character shingles. */
const DEFAULTS = { threshold: 0.8 } as const;

/** Edits a paraphrase-level pass over the data should treat as the same text (true Jaccard in the names). */
const NEAR_DUPLICATES: readonly (readonly [name: string, first: string, second: string])[] = [
  [
    'case and punctuation changes (1.0)',
    'Write a short poem about the ocean at night, focusing on the sound of the waves and the light of the moon.',
    'write a short poem about the ocean at night focusing on the sound of the waves and the light of the moon',
  ],
  [
    'whitespace changes (1.0)',
    'Can anyone recommend a good budget laptop for programming? I mostly write Python and need at least 16GB of RAM.',
    'Can  anyone recommend a good\n budget laptop for programming?   I mostly write Python and need at least 16GB of RAM. ',
  ],
  [
    'a typo (0.97)',
    'Explain how a bill becomes a law in the United States, including the roles of the House, the Senate ' +
      'and the President, and what happens when the President vetoes it.',
    'Explain how a bill becomes a law in the United States, including the roles of the House, the Senate ' +
      'and the Presdent, and what happens when the President vetoes it.',
  ],
  [
    'one word swapped in a long post (0.94)',
    "Just finished my first half marathon this morning! Legs are absolutely destroyed but I'm so proud of " +
      'myself. Huge thanks to everyone who cheered along the route and to my running club for keeping me ' +
      'motivated through all those cold winter training runs.',
    "Just finished my first half marathon this morning! Legs are absolutely destroyed but I'm so proud of " +
      'myself. Huge thanks to everyone who cheered along the route and to my running club for keeping me ' +
      'motivated through all those dark winter training runs.',
  ],
  [
    'an added trailing word (0.94)',
    'Give me a step-by-step plan to learn Spanish in six months while working full time, with ideas for daily practice.',
    'Give me a step-by-step plan to learn Spanish in six months while working full time, with ideas for daily practice please',
  ],
  [
    'an emoji and a full stop dropped (1.0)',
    "Anyone else think the new update completely ruined the app? 😡 Can't find my saved playlists anywhere " +
      'and the search is way slower now. #fail',
    "Anyone else think the new update completely ruined the app? Can't find my saved playlists anywhere " +
      'and the search is way slower now #fail',
  ],
  [
    'full-width letters and a dash (1.0)',
    'Ｗｈａｔ are the health benefits of drinking green tea every day, and are there any side effects?',
    'What are the health benefits of drinking green tea every day — and are there any side effects?',
  ],
];

/** Different texts on one topic, several short: none is a near-duplicate of the other. */
const DIFFERENT_TEXTS: readonly (readonly [first: string, second: string])[] = [
  [
    'How long should I boil an egg for a runny yolk?',
    'How long should I roast a whole chicken at 200 degrees?',
  ],
  [
    "What's a good substitute for buttermilk in pancakes?",
    "What's a good substitute for eggs in a vegan chocolate cake?",
  ],
  ['Best pizza in town?', 'Best sushi in town?'],
  ['I love this song', 'I hate this song'],
  [
    'Traffic on the highway this morning was insane, took me two hours to get to work.',
    'Traffic on the bridge tonight was insane, took me an hour to get home from work.',
  ],
  ['Write a haiku about autumn leaves.', 'Write a haiku about winter snow.'],
  [
    'Explain the difference between a virus and a bacterium.',
    'Explain the difference between weather and climate.',
  ],
  ['How do I make fluffy scrambled eggs?', 'How do I make crispy fried eggs?'],
];

/** mulberry32: a small seeded generator, so every run draws the same texts. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SYLLABLES = 'ka lo mi ren tas vo qui ex bri dan sel mor pu zen ath'.split(' ');
const TEMPLATES: readonly ((w: () => string) => string)[] = [
  (w) =>
    `How can I get my ${w()} to stop ${w()}ing every time the ${w()} is on? I already tried ${w()} and ` +
    `${w()}, and my neighbour swears by ${w()}, but nothing works and the ${w()} keeps ${w()}ing at night. ` +
    `Any advice from people who own a ${w()} would be appreciated.`,
  (w) =>
    `Write a short story about a ${w()} who finds a ${w()} in the ${w()} and has to decide whether to ` +
    `tell the ${w()}. Keep it under 500 words, set it in ${w()}, and end with the ${w()} learning ` +
    `something about ${w()} and ${w()}.`,
  (w) =>
    `Honestly the new ${w()} at ${w()} is the best thing that happened to this town since the ${w()} ` +
    `opened. Went there with ${w()} and ${w()} yesterday, ordered the ${w()} and the ${w()}, and we ` +
    `stayed until they closed. Ten out of ten, would ${w()} again.`,
];

/**
 * `count` texts of about 200 to 350 characters from shared templates, each with its own made-up words,
 * and near-duplicates of `planted` of them, each placed some way after its source. Returns them in
 * order with, for each, the index of the text it duplicates or -1.
 */
function generatedTexts(count: number, planted: number): { text: string; source: number }[] {
  const random = mulberry32(20_240_531);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const word = () => {
    let w = '';
    const syllables = 2 + Math.floor(random() * 3);
    for (let i = 0; i < syllables; i++) w += pick(SYLLABLES);
    return w;
  };
  const edits: readonly ((text: string) => string)[] = [
    (text) => {
      // A typo: one letter of a word in the middle replaced.
      let at = Math.floor(text.length / 4 + random() * (text.length / 2));
      while (!/[a-z]/.test(text[at] as string)) at++;
      const letter = text[at] === 'x' ? 'y' : 'x';
      return `${text.slice(0, at)}${letter}${text.slice(at + 1)}`;
    },
    (text) => `${text} ${word()}`,
    (text) => text.toUpperCase().replaceAll(',', ''),
    (text) => text.replaceAll(' ', '  ').replace('.', '!!'),
  ];
  const originals = Array.from({ length: count - planted }, () => pick(TEMPLATES)(word));
  const copies = new Map<number, { text: string; source: number }[]>();
  for (let k = 0; k < planted; k++) {
    const source = Math.floor((k * originals.length) / planted);
    const after = Math.min(originals.length - 1, source + Math.floor(random() * 300));
    const copy = {
      text: (edits[k % edits.length] as (text: string) => string)(originals[source] as string),
      source,
    };
    copies.set(after, [...(copies.get(after) ?? []), copy]);
  }
  const texts: { text: string; source: number }[] = [];
  const positionOf: number[] = [];
  originals.forEach((text, i) => {
    positionOf.push(texts.length);
    texts.push({ text, source: -1 });
    for (const copy of copies.get(i) ?? [])
      texts.push({ text: copy.text, source: positionOf[copy.source] as number });
  });
  return texts;
}

describe('shingleText', () => {
  it('applies NFKC, lower-cases, drops punctuation and symbols and collapses whitespace', () => {
    // Prepare
    const text = '  Hello,   WORLD!! ＡＢＣ – ok? 😀\n\tfine… ';

    // Act
    const shingled = shingleText(text);

    // Assess
    expect(shingled).toBe('hello world abc ok fine');
  });
});

describe('shingleHashes', () => {
  it('gives one hash per distinct shingle of five code points', () => {
    // Prepare
    const repeated = 'abcdefabcdef';
    const astral = '𠀀𠀁𠀂𠀃𠀄𠀅';

    // Act
    const repeatedHashes = shingleHashes(repeated);
    const astralHashes = shingleHashes(astral);

    // Assess
    expect(repeatedHashes).toHaveLength(6);
    expect(new Set(repeatedHashes).size).toBe(6);
    expect(astralHashes).toHaveLength(2);
  });

  it('makes a non-empty text shorter than the shingle size one shingle, and an empty one none', () => {
    // Prepare
    const short = 'Hi!';
    const empty = ' ?!… ';

    // Act
    const shortHashes = shingleHashes(short);
    const emptyHashes = shingleHashes(empty);

    // Assess
    expect(shortHashes).toHaveLength(1);
    expect(emptyHashes).toHaveLength(0);
  });

  it('hashes the same shingles of differently written texts the same', () => {
    // Prepare
    const first = 'Quick brown fox.';
    const second = 'QUICK   brown, fox';

    // Act
    const hashes = [shingleHashes(first), shingleHashes(second)];

    // Assess
    expect(hashes[0]).toEqual(hashes[1]);
  });
});

describe('minhashSignature and estimateSimilarity', () => {
  it('gives the same signature for the same text on every call, with the same values in every process', () => {
    // Prepare
    const text = 'Summarise the plot of Hamlet in three sentences.';

    // Act
    const first = minhashSignature(text);
    const second = minhashSignature(text);

    // Assess
    expect(first).toHaveLength(128);
    expect(second).toEqual(first);
    expect(Array.from(first.slice(0, 4))).toMatchInlineSnapshot(`
      [
        2166221133,
        2267831801,
        2372446169,
        2174404389,
      ]
    `);
  });

  it('has as many values as permutations', () => {
    // Prepare
    const text = 'Summarise the plot of Hamlet in three sentences.';

    // Act
    const signature = minhashSignature(text, 64, 3);

    // Assess
    expect(signature).toHaveLength(64);
  });

  it('estimates identical signatures as similarity 1', () => {
    // Prepare
    const signature = minhashSignature('Describe the water cycle for a ten-year-old.');

    // Act
    const similarity = estimateSimilarity(signature, signature.slice());

    // Assess
    expect(similarity).toBe(1);
  });

  it('estimates within 0.1 of the exact Jaccard similarity', () => {
    // Prepare
    const pairs = [
      ...DIFFERENT_TEXTS.slice(4),
      ...NEAR_DUPLICATES.slice(2, 5).map(([, a, b]) => [a, b] as const),
    ];

    // Act
    const results = pairs.map(([a, b]) => ({
      estimate: estimateSimilarity(minhashSignature(a), minhashSignature(b)),
      exact: textSimilarity(a, b),
    }));

    // Assess
    for (const { estimate, exact } of results) expect(Math.abs(estimate - exact)).toBeLessThanOrEqual(0.1);
  });

  it('refuses signatures of different lengths', () => {
    // Prepare
    const text = 'Describe the water cycle for a ten-year-old.';

    // Act
    const compare = () => estimateSimilarity(minhashSignature(text, 128), minhashSignature(text, 64));

    // Assess
    expect(compare).toThrow(RangeError);
  });
});

describe('textSimilarity', () => {
  it('is the Jaccard similarity of the shingle sets', () => {
    // Prepare
    const first = 'abcdef';
    const second = 'abcdeg';

    // Act
    const similarity = textSimilarity(first, second);

    // Assess
    expect(similarity).toBe(1 / 3);
  });

  it('is 1 for two texts that shingle to nothing and 0 when only one does', () => {
    // Prepare
    const nothing = '...';

    // Act
    const both = textSimilarity(nothing, '');
    const one = textSimilarity(nothing, 'Something');

    // Assess
    expect(both).toBe(1);
    expect(one).toBe(0);
  });
});

describe('lshParams', () => {
  it('chooses what datasketch chooses for 128 permutations', () => {
    // Prepare
    const thresholds = [0.5, 0.7, 0.8, 0.9];

    // Act
    const params = thresholds.map((threshold) => lshParams(threshold, 128));

    // Assess
    expect(params).toEqual([
      { bands: 25, rows: 5 },
      { bands: 14, rows: 9 },
      { bands: 9, rows: 13 },
      { bands: 5, rows: 25 },
    ]);
  });

  it('keeps bands * rows within the permutations, and gives a lower threshold more bands of no more rows', () => {
    // Prepare
    const thresholds = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3];

    // Act
    const params = [64, 128, 256].map((permutations) => ({
      permutations,
      params: thresholds.map((threshold) => lshParams(threshold, permutations)),
    }));

    // Assess
    for (const { permutations, params: byThreshold } of params) {
      for (const { bands, rows } of byThreshold) expect(bands * rows).toBeLessThanOrEqual(permutations);
      for (let i = 1; i < byThreshold.length; i++) {
        const [higher, lower] = [byThreshold[i - 1], byThreshold[i]];
        expect(lower?.bands).toBeGreaterThan(higher?.bands as number);
        expect(lower?.rows).toBeLessThanOrEqual(higher?.rows as number);
      }
    }
  });
});

describe('NearDuplicateIndex', () => {
  it.each(NEAR_DUPLICATES)('finds a near-duplicate with %s at the default threshold', (_, first, second) => {
    // Prepare
    const index = new NearDuplicateIndex<string>(DEFAULTS);
    index.add(first, 'first');

    // Act
    const found = index.find(second);
    const exact = textSimilarity(first, second);

    // Assess
    expect(found?.value).toBe('first');
    expect(found?.similarity).toBeGreaterThanOrEqual(0.8);
    expect(exact).toBeGreaterThanOrEqual(0.93);
  });

  it.each(DIFFERENT_TEXTS)('keeps %j and %j apart', (first, second) => {
    // Prepare
    const index = new NearDuplicateIndex<string>(DEFAULTS);
    index.add(first, 'first');

    // Act
    const found = index.find(second);
    const exact = textSimilarity(first, second);

    // Assess
    expect(found).toBeUndefined();
    expect(exact).toBeLessThan(0.5);
  });

  it('returns the earliest-added match, even when a later entry is more similar', () => {
    // Prepare
    const text =
      'Explain how a bill becomes a law in the United States, including the roles of the House and Senate.';
    const index = new NearDuplicateIndex<number>(DEFAULTS);
    index.add(`${text} Thanks`, 1);
    index.add(text, 2);
    index.add(text, 3);

    // Act
    const found = index.find(text);

    // Assess
    expect(found?.value).toBe(1);
    expect(found?.similarity).toBeLessThan(1);
    expect(index.size).toBe(3);
  });

  it('matches nothing with, and adds nothing for, texts that shingle to nothing', () => {
    // Prepare
    const index = new NearDuplicateIndex<number>(DEFAULTS);
    index.add('', 1);
    index.add('?!', 2);

    // Act
    const foundEmpty = index.find('');
    const claimed = index.claim(' ... ', 3);

    // Assess
    expect(foundEmpty).toBeUndefined();
    expect(claimed).toBeUndefined();
    expect(index.size).toBe(0);
  });

  it('claims a new text as an entry, and gives back the first claimant for a near-duplicate', () => {
    // Prepare
    const index = new NearDuplicateIndex<string>(DEFAULTS);
    const [, first, second] = NEAR_DUPLICATES[3] as (typeof NEAR_DUPLICATES)[number];

    // Act
    const firstClaim = index.claim(first, 'first');
    const secondClaim = index.claim(second, 'second');
    const unrelatedClaim = index.claim('Write a haiku about autumn leaves.', 'haiku');

    // Assess
    expect(firstClaim).toBeUndefined();
    expect(secondClaim?.value).toBe('first');
    expect(unrelatedClaim).toBeUndefined();
    expect(index.size).toBe(2);
  });

  it('refuses a threshold outside (0, 1], no permutations, and a shingle size that is not a whole number', () => {
    // Prepare
    const options = [
      { threshold: 0 },
      { threshold: 1.5 },
      { threshold: 0.8, permutations: 0 },
      { threshold: 0.8, shingleSize: 2.5 },
    ];

    // Act
    const constructors = options.map((o) => () => new NearDuplicateIndex(o));

    // Assess
    for (const construct of constructors) expect(construct).toThrow(RangeError);
  });

  it('finds all 100 near-duplicates planted among 2,000 generated texts, and flags nothing else', () => {
    // Prepare
    const texts = generatedTexts(2000, 100);
    const index = new NearDuplicateIndex<number>(DEFAULTS);

    // Act
    const claims = texts.map(({ text }, i) => index.claim(text, i)?.value ?? -1);

    // Assess
    const planted = texts.filter((t) => t.source !== -1);
    expect(planted).toHaveLength(100);
    expect(
      Math.min(...planted.map((t) => textSimilarity(t.text, (texts[t.source] as { text: string }).text))),
    ).toBeGreaterThan(0.94);
    expect(claims).toEqual(texts.map((t) => t.source));
    expect(index.size).toBe(1900);
  });
});
