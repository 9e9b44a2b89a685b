import { describe, expect, it } from 'vitest';
import { loadEnv } from '../../lib/pipeline/env.js';
import { ConfigError } from '../../lib/pipeline/errors.js';

describe('loadEnv', () => {
  it('reads the bucket and stage a stage function is deployed with', () => {
    const env = loadEnv({ BUCKET_NAME: 'runs', STAGE: 'induce', PATH: '/bin' });

    expect(env).toEqual({ BUCKET_NAME: 'runs', STAGE: 'induce' });
  });

  it('names a missing bucket in a ConfigError', () => {
    const act = () => loadEnv({});

    expect(act).toThrow(ConfigError);
    expect(act).toThrow('stage function environment: BUCKET_NAME not set');
  });
});
