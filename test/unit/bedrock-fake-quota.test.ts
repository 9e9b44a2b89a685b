import { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import { afterEach, describe, expect, it } from 'vitest';
import { ModelThrottledError } from '../../lib/pipeline/errors.js';
import { BedrockModelClient } from '../../lib/pipeline/models/bedrock.js';
import { type BedrockFake, type BedrockFakeOptions, startBedrockFake } from '../support/bedrock-fake.js';

const MODEL_ID = 'anthropic.claude-3-haiku-20240307-v1:0';
const request = { system: 'Answer briefly.', prompt: 'Say hello.', maxTokens: 20, temperature: 0 };

describe('the Bedrock fake request quota', () => {
  const fakes: BedrockFake[] = [];
  const clients: BedrockRuntimeClient[] = [];

  async function setUp(
    options: BedrockFakeOptions,
  ): Promise<{ fake: BedrockFake; model: BedrockModelClient }> {
    const fake = await startBedrockFake(options);
    fakes.push(fake);
    const client = new BedrockRuntimeClient({
      endpoint: fake.url,
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIDFAKE', secretAccessKey: 'fake-secret' },
      maxAttempts: 1,
    });
    clients.push(client);
    return {
      fake,
      model: new BedrockModelClient({ spec: `bedrock:${MODEL_ID}`, modelId: MODEL_ID, client }),
    };
  }

  /** Sends `n` calls at once; resolves with how many were answered and how many throttled. */
  async function burst(model: BedrockModelClient, n: number): Promise<{ ok: number; throttled: number }> {
    const outcomes = await Promise.allSettled(Array.from({ length: n }, () => model.generate(request)));
    const rejected = outcomes.flatMap((o) => (o.status === 'rejected' ? [o.reason] : []));
    expect(rejected.every((e) => e instanceof ModelThrottledError)).toBe(true);
    return { ok: n - rejected.length, throttled: rejected.length };
  }

  afterEach(async () => {
    for (const client of clients.splice(0)) client.destroy();
    await Promise.all(fakes.splice(0).map((f) => f.close()));
  });

  it('answers a burst beyond one second of quota with 429 ThrottlingException', async () => {
    // Prepare: 600 a minute holds a burst of 10
    const { fake, model } = await setUp({ requestsPerMinute: 600 });

    // Act
    const { ok, throttled } = await burst(model, 40);

    // Assess: the bucket refills 10 a second, so a slow burst may get one or two more in
    expect(ok).toBeGreaterThanOrEqual(10);
    expect(ok).toBeLessThanOrEqual(13);
    expect(fake.quotaThrottled).toBe(throttled);
    expect(fake.answered).toBe(ok);
    expect(fake.requests).toHaveLength(40);
  });

  it('refills the quota over time', async () => {
    // Prepare
    const { fake, model } = await setUp({ requestsPerMinute: 600 });
    await burst(model, 20);

    // Act: half a second refills about 5 requests
    await new Promise((resolve) => setTimeout(resolve, 500));
    const { ok } = await burst(model, 20);

    // Assess
    expect(ok).toBeGreaterThanOrEqual(4);
    expect(ok).toBeLessThanOrEqual(9);
    expect(fake.answered + fake.quotaThrottled).toBe(40);
  });

  it('enforces no quota by default', async () => {
    // Prepare
    const { fake, model } = await setUp({});

    // Act
    const { ok } = await burst(model, 40);

    // Assess
    expect(ok).toBe(40);
    expect(fake.quotaThrottled).toBe(0);
  });

  it('rejects a quota that is not a positive number', async () => {
    await expect(startBedrockFake({ requestsPerMinute: 0 })).rejects.toThrow(RangeError);
  });
});
