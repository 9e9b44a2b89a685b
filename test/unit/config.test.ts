import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../lib/pipeline/config.js';
import { ConfigError } from '../../lib/pipeline/errors.js';

describe('parseConfig', () => {
  it('refuses an unknown key instead of ignoring it, naming where it is', () => {
    // Prepare
    const raw = { shardsize: 10, quality: { nearDuplicateTreshold: 0.7 } };

    // Act
    const act = () => parseConfig(raw, 'config my.json');

    // Assess
    expect(act).toThrow(ConfigError);
    expect(act).toThrow(/quality: Unrecognized key: "nearDuplicateTreshold"/);
    expect(act).toThrow(/\(root\): Unrecognized key: "shardsize"/);
  });

  it('says where a setting of an earlier version went', () => {
    // Prepare
    const raw = { input: { maxTextChars: 2000 } };

    // Act
    const act = () => parseConfig(raw);

    // Assess
    expect(act).toThrow(/maxTextChars is now quality\.lengths\.rejected\.max/);
  });

  it('fills every quality setting with its default', () => {
    // Prepare
    const raw = { quality: { lengths: { chosen: { min: 50 } } } };

    // Act
    const config = parseConfig(raw);

    // Assess
    expect(config.quality).toEqual({
      nearDuplicateThreshold: 0.8,
      minhashPermutations: 128,
      shingleSize: 5,
      lengths: {
        instruction: { min: 10, max: 2000 },
        chosen: { min: 50, max: 8000 },
        rejected: { min: 1, max: 20_000 },
      },
      maxNearIdenticalChosen: 5,
      rejectStockRefusals: true,
    });
  });
});
