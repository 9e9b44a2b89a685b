const WORDS = (
  'river mountain coffee window garden engine ticket winter market pencil silver thunder harbor violin ' +
  'basket candle orange planet rocket saddle tunnel velvet wallet yellow zipper anchor bridge castle ' +
  'dragon feather glacier hammer island jungle kettle ladder meadow needle oyster parrot quarry ribbon ' +
  'shadow tomato umbrella valley walnut lantern compass biscuit blanket cactus dolphin eclipse falcon'
).split(' ');

/** `count` texts of 14 words each, from a seeded generator: distinct enough to survive near-duplicate removal. */
export function texts(count: number): string[] {
  let seed = 12345;
  const next = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed;
  };
  return Array.from({ length: count }, (_, i) => {
    const words = Array.from({ length: 14 }, () => WORDS[next() % WORDS.length]);
    return `Complaint ${i}: ${words.join(' ')}.`;
  });
}
