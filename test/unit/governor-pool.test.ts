import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../lib/pipeline/errors.js';
import { GovernorPool } from '../../lib/pipeline/models/governor-pool.js';
import { fakeConfig } from '../support/pipeline.js';

const config = fakeConfig({
  concurrency: 4,
  callConcurrency: 3,
  limits: { 'bedrock:fake': { requestsPerMinute: 400, tokensPerMinute: 200_000, maxConcurrency: 10 } },
});

describe('GovernorPool', () => {
  it('gives a Lambda process 1/concurrency of the quota, as each shard runs in a process of its own', () => {
    const pool = new GovernorPool({ sharedByShards: false });

    expect(pool.limitsOf('bedrock:fake', config)).toEqual({
      requestsPerMinute: 100,
      tokensPerMinute: 50_000,
      maxConcurrency: 2,
    });
  });

  it('gives the local engine the whole quota, as all shards call from one process', () => {
    const pool = new GovernorPool({ sharedByShards: true });

    expect(pool.limitsOf('bedrock:fake', config)).toEqual({
      requestsPerMinute: 400,
      tokensPerMinute: 200_000,
      maxConcurrency: 10,
    });
  });

  it('sets no budget for a model without limits, and lets every call slot of every shard run', () => {
    const local = new GovernorPool({ sharedByShards: true });
    const lambda = new GovernorPool({ sharedByShards: false });

    expect(local.limitsOf('bedrock:other', config)).toEqual({ maxConcurrency: 12 });
    expect(lambda.limitsOf('bedrock:other', config)).toEqual({ maxConcurrency: 3 });
  });

  it('refuses a model call limit below the shards in flight, which would each need a slot', () => {
    const act = () => fakeConfig({ concurrency: 4, limits: { 'bedrock:fake': { maxConcurrency: 2 } } });

    expect(act).toThrow(ConfigError);
    expect(act).toThrow(/limits\.bedrock:fake\.maxConcurrency: 2 is below concurrency 4/);
  });

  it('shares one governor per model and configuration', () => {
    const pool = new GovernorPool({ sharedByShards: true });

    expect(pool.get('bedrock:fake', config)).toBe(pool.get('bedrock:fake', config));
    expect(pool.get('bedrock:fake', config)).not.toBe(pool.get('bedrock:other', config));
  });
});
