import { describe, expect, it } from 'vitest';
import { DiversityTally, distinctNgramRatio } from '../../lib/pipeline/quality/diversity.js';

describe('distinctNgramRatio', () => {
  it('divides unique word n-grams by all word n-grams, ignoring case and punctuation', () => {
    // Prepare
    const texts = ['The cat sat.', 'the CAT ran!'];

    // Act
    const distinct1 = distinctNgramRatio(texts, 1);
    const distinct2 = distinctNgramRatio(texts, 2);
    const distinct3 = distinctNgramRatio(texts, 3);

    // Assess
    expect(distinct1).toBe(4 / 6);
    expect(distinct2).toBe(3 / 4);
    expect(distinct3).toBe(2 / 2);
  });

  it('does not join the last word of one text to the first of the next into an n-gram', () => {
    // Prepare
    const texts = ['alpha beta', 'gamma delta'];

    // Act
    const distinct2 = distinctNgramRatio(texts, 2);

    // Assess
    expect(distinct2).toBe(1);
  });

  it('keeps inner apostrophes in a word, either kind, and tells word order apart', () => {
    // Prepare
    const texts = ["don't stop", 'stop don’t', 'don t'];

    // Act
    const distinct1 = distinctNgramRatio(texts, 1);
    const distinct2 = distinctNgramRatio(texts, 2);

    // Assess
    expect(distinct1).toBe(4 / 6);
    expect(distinct2).toBe(1);
  });

  it('is 0 for texts without words, and refuses an n below 1', () => {
    // Act
    const none = distinctNgramRatio(['', '...', '!'], 1);

    // Assess
    expect(none).toBe(0);
    expect(() => distinctNgramRatio(['a'], 0)).toThrow(RangeError);
  });

  it('counts 200,000 distinct words as distinct, with no collision among their hashes', () => {
    // Prepare
    const texts = Array.from({ length: 20_000 }, (_, i) =>
      Array.from({ length: 10 }, (_, j) => `w${i * 10 + j}`).join(' '),
    );

    // Act
    const distinct1 = distinctNgramRatio(texts, 1);
    const distinct2 = distinctNgramRatio(texts, 2);

    // Assess
    expect(distinct1).toBe(1);
    expect(distinct2).toBe(1);
  });
});

describe('DiversityTally', () => {
  it('tallies distinct-1 and distinct-2 over everything added', () => {
    // Prepare
    const tally = new DiversityTally();

    // Act
    tally.add('The cat sat.');
    tally.add('the CAT ran!');
    const summary = tally.summary();

    // Assess
    expect(summary).toMatchObject({ texts: 2, distinct1: 4 / 6, distinct2: 3 / 4 });
  });

  it('lists the most frequent texts, grouping case and spacing, in the first spelling seen', () => {
    // Prepare
    const tally = new DiversityTally({ top: 2 });
    const texts = [
      "Sorry, but I can't assist with that.",
      'Use fresh yeast.',
      "sorry,  but I can't assist with that.",
      'Use fresh yeast.',
      "SORRY, BUT I CAN'T ASSIST WITH THAT.",
      'Let the dough rise.',
    ];

    // Act
    for (const text of texts) tally.add(text);
    const { top } = tally.summary();

    // Assess
    expect(top).toEqual([
      { text: "Sorry, but I can't assist with that.", count: 3 },
      { text: 'Use fresh yeast.', count: 2 },
    ]);
  });

  it('lists ten texts by default, the one seen first ahead on a tie', () => {
    // Prepare
    const tally = new DiversityTally();

    // Act
    for (let i = 0; i < 12; i++) tally.add(`Answer number ${i}`);
    tally.add('Answer number 11');
    const { top } = tally.summary();

    // Assess
    expect(top).toHaveLength(10);
    expect(top[0]).toEqual({ text: 'Answer number 11', count: 2 });
    expect(top.slice(1).map((t) => t.text)).toEqual(
      Array.from({ length: 9 }, (_, i) => `Answer number ${i}`),
    );
  });

  it('keeps at most maxTextChars of a listed text', () => {
    // Prepare
    const tally = new DiversityTally({ maxTextChars: 5 });

    // Act
    tally.add('A long response that goes on.');
    const { top } = tally.summary();

    // Assess
    expect(top).toEqual([{ text: 'A lon', count: 1 }]);
  });

  it('groups by the key a caller gives, when it has one already', () => {
    // Prepare
    const tally = new DiversityTally();

    // Act
    tally.add('first spelling', 'same-key');
    tally.add('another spelling', 'same-key');
    const { top } = tally.summary();

    // Assess
    expect(top).toEqual([{ text: 'first spelling', count: 2 }]);
  });

  it('summarizes nothing added as zeros', () => {
    // Act
    const summary = new DiversityTally().summary();

    // Assess
    expect(summary).toEqual({ texts: 0, distinct1: 0, distinct2: 0, top: [] });
  });
});
