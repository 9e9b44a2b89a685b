import { BedrockRuntimeClient, type BedrockRuntimeClientConfig } from '@aws-sdk/client-bedrock-runtime';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { JudgeAnswerError, ModelThrottledError, ModelTransientError } from '../../lib/pipeline/errors.js';
import { BedrockModelClient } from '../../lib/pipeline/models/bedrock.js';
import { type BedrockFake, type BedrockFakeOptions, startBedrockFake } from '../support/bedrock-fake.js';

const MODEL_ID = 'anthropic.claude-3-haiku-20240307-v1:0';
const Verdict = z.object({
  score: z.number().int().min(1).max(5),
  verdict: z.enum(['drop', 'keep']),
  rationale: z.string().min(3),
});
const judgeRequest = {
  system: 'You grade instructions.',
  prompt: 'Grade this instruction: explain photosynthesis.',
  maxTokens: 200,
  temperature: 0,
  schema: Verdict,
  toolName: 'grade',
  toolDescription: 'Records the grade.',
};
const generateRequest = {
  system: 'Answer briefly.',
  prompt: 'Explain photosynthesis to a child in two sentences.',
  maxTokens: 100,
  temperature: 0.5,
};
const clientConfig: BedrockRuntimeClientConfig = {
  region: 'us-east-1',
  credentials: { accessKeyId: 'AKIDFAKE', secretAccessKey: 'fake-secret' },
};

describe('BedrockModelClient against the local Converse fake', () => {
  const fakes: BedrockFake[] = [];
  const clients: BedrockRuntimeClient[] = [];

  async function setUp(
    options: BedrockFakeOptions = {},
    config: BedrockRuntimeClientConfig = {},
  ): Promise<{ fake: BedrockFake; model: BedrockModelClient }> {
    const fake = await startBedrockFake(options);
    fakes.push(fake);
    const client = new BedrockRuntimeClient({ ...clientConfig, endpoint: fake.url, ...config });
    clients.push(client);
    return {
      fake,
      model: new BedrockModelClient({ spec: `bedrock:${MODEL_ID}`, modelId: MODEL_ID, client }),
    };
  }

  afterEach(async () => {
    for (const client of clients.splice(0)) client.destroy();
    await Promise.all(fakes.splice(0).map((f) => f.close()));
  });

  it('generates a deterministic text that differs from the prompt, with usage', async () => {
    // Prepare
    const { fake, model } = await setUp();

    // Act
    const first = await model.generate(generateRequest);
    const second = await model.generate(generateRequest);

    // Assess
    expect(first.text).toMatch(/^Fake answer [0-9a-f]{8}: Explain photosynthesis/);
    expect(first.text).not.toBe(generateRequest.prompt);
    expect(second.text).toBe(first.text);
    expect(first.usage.inputTokens).toBeGreaterThan(0);
    expect(first.usage.outputTokens).toBeGreaterThan(0);
    expect(fake.requests[0]).toMatchObject({ modelId: MODEL_ID, hasToolConfig: false, signed: true });
    expect(fake.requests[0]?.body.inferenceConfig).toEqual({ maxTokens: 100, temperature: 0.5 });
  });

  it('judges through a forced tool call the fake records, with an answer that keeps the record', async () => {
    // Prepare
    const { fake, model } = await setUp();

    // Act
    const result = await model.judge(judgeRequest);

    // Assess
    expect(result.value).toEqual({ score: 5, verdict: 'keep', rationale: 'Fake rationale.' });
    expect(result.usage.inputTokens).toBeGreaterThan(0);
    expect(fake.requests[0]?.hasToolConfig).toBe(true);
    expect(fake.requests[0]?.toolChoice).toEqual({ tool: { name: 'grade' } });
  });

  it('lets a respond hook override the answer, and a malformed tool answer fails validation', async () => {
    // Prepare
    const hooked = await setUp({
      respond: () => ({ toolInput: { score: 1, verdict: 'drop', rationale: 'unclear' } }),
    });
    const malformed = await setUp({ malformedToolRate: 1 });

    // Act
    const overridden = await hooked.model.judge(judgeRequest);
    const error = await malformed.model.judge(judgeRequest).catch((e: unknown) => e);

    // Assess
    expect(overridden.value).toEqual({ score: 1, verdict: 'drop', rationale: 'unclear' });
    expect(error).toBeInstanceOf(JudgeAnswerError);
    expect((error as JudgeAnswerError).usage.inputTokens).toBeGreaterThan(0);
  });

  it('surfaces throttling as ModelThrottledError when the client does not retry', async () => {
    // Prepare
    const { fake, model } = await setUp({ throttleRate: 1 }, { maxAttempts: 1 });

    // Act
    const error = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelThrottledError);
    expect(((error as Error).cause as Error).name).toBe('ThrottlingException');
    expect(fake.requests).toHaveLength(1);
  });

  it('surfaces a server error as ModelTransientError once the SDK retries are spent', async () => {
    // Prepare
    const { fake, model } = await setUp({ errorRate: 1 }, { maxAttempts: 2, retryMode: 'standard' });

    // Act
    const error = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelTransientError);
    expect(fake.requests).toHaveLength(2);
  });

  describe('with AWS_ENDPOINT_URL_BEDROCK_RUNTIME set', () => {
    const saved = process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME;

    afterEach(() => {
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME;
      else process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME = saved;
    });

    it('reaches the fake without an explicit endpoint', async () => {
      // Prepare
      const fake = await startBedrockFake();
      fakes.push(fake);
      process.env.AWS_ENDPOINT_URL_BEDROCK_RUNTIME = fake.url;
      const client = new BedrockRuntimeClient(clientConfig);
      clients.push(client);
      const model = new BedrockModelClient({ spec: `bedrock:${MODEL_ID}`, modelId: MODEL_ID, client });

      // Act
      const result = await model.generate(generateRequest);

      // Assess
      expect(result.text).toMatch(/^Fake answer /);
      expect(fake.requests).toHaveLength(1);
    });
  });
});
