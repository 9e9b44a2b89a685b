import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configFrom } from '../../lib/cli/main.js';
import { parseConfig } from '../../lib/pipeline/config.js';
import { ConfigError } from '../../lib/pipeline/errors.js';
import { tempDir } from '../support/temp.js';

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

describe('parseConfig run modes', () => {
  it('runs model calls on-demand unless the config says otherwise', () => {
    // Prepare
    const raw = {};

    // Act
    const config = parseConfig(raw);

    // Assess
    expect(config.mode).toBe('on-demand');
  });

  it('refuses an unknown mode, naming mode', () => {
    // Prepare
    const raw = { mode: 'cheap' };

    // Act
    const act = () => parseConfig(raw, 'config my.json');

    // Assess
    expect(act).toThrow(ConfigError);
    expect(act).toThrow(
      /^config my\.json: mode: Invalid option: expected one of "on-demand"\|"batch"\|"auto"$/,
    );
  });

  it('refuses a batch.minRecordsPerJob above batch.maxRecordsPerJob', () => {
    // Prepare
    const raw = { mode: 'batch', batch: { minRecordsPerJob: 500, maxRecordsPerJob: 400 } };

    // Act
    const act = () => parseConfig(raw);

    // Assess
    expect(act).toThrow(/batch: minRecordsPerJob must not exceed maxRecordsPerJob/);
  });

  it('allows up to 800 shards on-demand', () => {
    // Prepare
    const raw = { mode: 'on-demand', maxShards: 700 };

    // Act
    const config = parseConfig(raw);

    // Assess
    expect(config.maxShards).toBe(700);
  });

  it.each(['batch', 'auto'])('refuses more than 600 shards in mode %s', (mode) => {
    // Prepare
    const raw = { mode, maxShards: 601 };

    // Act
    const act = () => parseConfig(raw);

    // Assess
    expect(act).toThrow(new RegExp(`maxShards: at most 600 in mode ${mode}`));
  });
});

describe('configFrom', () => {
  it('lets --mode override the mode of the config file', async () => {
    // Prepare
    const file = join(tempDir(), 'config.json');
    writeFileSync(file, JSON.stringify({ mode: 'batch', batch: { maxJobs: 3 } }));

    // Act
    const config = await configFrom({ config: file, mode: 'auto' });

    // Assess
    expect(config.mode).toBe('auto');
    expect(config.batch.maxJobs).toBe(3);
  });

  it('keeps the mode of the config file without --mode', async () => {
    // Prepare
    const file = join(tempDir(), 'config.json');
    writeFileSync(file, JSON.stringify({ mode: 'batch' }));

    // Act
    const config = await configFrom({ config: file });

    // Assess
    expect(config.mode).toBe('batch');
  });

  it('refuses a --mode that is not a run mode, naming the flag and the modes', async () => {
    // Prepare
    const values = { mode: 'cheap' };

    // Act
    const act = configFrom(values);

    // Assess
    await expect(act).rejects.toThrow('--mode takes on-demand, batch, auto, not "cheap"');
  });
});
