import {
  AccessDeniedException,
  BedrockRuntimeClient,
  ConverseCommand,
  type ConverseCommandOutput,
  ServiceUnavailableException,
  ThrottlingException,
  ValidationException,
} from '@aws-sdk/client-bedrock-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  JudgeAnswerError,
  ModelConfigError,
  ModelRefusedError,
  ModelRequestError,
  ModelThrottledError,
  ModelTransientError,
} from '../../lib/pipeline/errors.js';
import { BedrockModelClient } from '../../lib/pipeline/models/bedrock.js';
import { jsonSchemaOf } from '../../lib/pipeline/models/model-client.js';

const MODEL_ID = 'anthropic.claude-3-haiku-20240307-v1:0';
const Verdict = z.object({ score: z.number().int().min(1).max(5), rationale: z.string() });
const judgeRequest = {
  system: 'You grade instructions.',
  prompt: 'Grade this instruction.',
  maxTokens: 200,
  temperature: 0,
  schema: Verdict,
  toolName: 'grade',
  toolDescription: 'Records the grade.',
};
const generateRequest = { system: 'Be brief.', prompt: 'Say hi.', maxTokens: 50, temperature: 0.7 };
const metadata = { httpStatusCode: 200, attempts: 1, totalRetryDelay: 0 };

function toolAnswer(input: unknown): ConverseCommandOutput {
  return {
    $metadata: metadata,
    output: {
      message: {
        role: 'assistant',
        content: [{ toolUse: { toolUseId: 't1', name: 'grade', input: input as never } }],
      },
    },
    stopReason: 'tool_use',
    usage: { inputTokens: 120, outputTokens: 30, totalTokens: 150 },
    metrics: { latencyMs: 10 },
  };
}

function textAnswer(
  text: string,
  stopReason: ConverseCommandOutput['stopReason'] = 'end_turn',
): ConverseCommandOutput {
  return {
    $metadata: metadata,
    output: { message: { role: 'assistant', content: [{ text }] } },
    stopReason,
    usage: { inputTokens: 12, outputTokens: 7, totalTokens: 19 },
    metrics: { latencyMs: 10 },
  };
}

describe('BedrockModelClient', () => {
  const mock = mockClient(BedrockRuntimeClient);
  let model: BedrockModelClient;

  beforeEach(() => {
    mock.reset();
    model = new BedrockModelClient({
      spec: `bedrock:${MODEL_ID}`,
      modelId: MODEL_ID,
      client: new BedrockRuntimeClient({ region: 'us-east-1' }),
    });
  });

  afterEach(() => {
    mock.reset();
  });

  it('sends the judge request with the zod-derived tool schema and a forced tool choice', async () => {
    // Prepare
    mock.on(ConverseCommand).resolves(toolAnswer({ score: 4, rationale: 'fine' }));

    // Act
    await model.judge(judgeRequest);

    // Assess
    const input = mock.commandCalls(ConverseCommand)[0]?.args[0].input;
    expect(input).toEqual({
      modelId: MODEL_ID,
      system: [{ text: 'You grade instructions.' }],
      messages: [{ role: 'user', content: [{ text: 'Grade this instruction.' }] }],
      inferenceConfig: { maxTokens: 200, temperature: 0 },
      toolConfig: {
        tools: [
          {
            toolSpec: {
              name: 'grade',
              description: 'Records the grade.',
              inputSchema: { json: jsonSchemaOf(Verdict) },
            },
          },
        ],
        toolChoice: { tool: { name: 'grade' } },
      },
    });
  });

  it('returns a valid tool answer, validated, with its usage', async () => {
    // Prepare
    mock.on(ConverseCommand).resolves(toolAnswer({ score: 5, rationale: 'clear' }));

    // Act
    const result = await model.judge(judgeRequest);

    // Assess
    expect(result).toEqual({
      value: { score: 5, rationale: 'clear' },
      usage: { inputTokens: 120, outputTokens: 30 },
    });
  });

  it('throws JudgeAnswerError carrying the usage when the tool answer breaks the schema', async () => {
    // Prepare
    mock.on(ConverseCommand).resolves(toolAnswer({ score: 9 }));

    // Act
    const error = await model.judge(judgeRequest).catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(JudgeAnswerError);
    expect((error as JudgeAnswerError).usage).toEqual({ inputTokens: 120, outputTokens: 30 });
    expect((error as JudgeAnswerError).message).toMatch(/score/);
  });

  it('throws JudgeAnswerError when the model answers the judge without a tool call', async () => {
    // Prepare
    mock.on(ConverseCommand).resolves(textAnswer('I would give it a 4.'));

    // Act
    const error = await model.judge(judgeRequest).catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(JudgeAnswerError);
    expect((error as JudgeAnswerError).usage).toEqual({ inputTokens: 12, outputTokens: 7 });
  });

  it('surfaces a ThrottlingException as ModelThrottledError with the SDK error as cause', async () => {
    // Prepare
    const throttle = new ThrottlingException({
      message: 'Too many requests',
      $metadata: { httpStatusCode: 429 },
    });
    mock.on(ConverseCommand).rejects(throttle);

    // Act
    const error = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelThrottledError);
    expect((error as Error).cause).toBe(throttle);
  });

  it('surfaces a 503 ServiceUnavailableException as ModelTransientError', async () => {
    // Prepare
    mock
      .on(ConverseCommand)
      .rejects(
        new ServiceUnavailableException({ message: 'unavailable', $metadata: { httpStatusCode: 503 } }),
      );

    // Act
    const error = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelTransientError);
  });

  it('surfaces an unnamed 5xx and a connection reset as ModelTransientError', async () => {
    // Prepare
    const gateway = Object.assign(new Error('bad gateway'), {
      name: 'Unknown',
      $metadata: { httpStatusCode: 502 },
    });
    const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    mock.on(ConverseCommand).rejectsOnce(gateway).rejectsOnce(reset);

    // Act
    const first = await model.generate(generateRequest).catch((e: unknown) => e);
    const second = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(first).toBeInstanceOf(ModelTransientError);
    expect(second).toBeInstanceOf(ModelTransientError);
  });

  it('surfaces a DNS failure and an error caused by a connection reset as ModelTransientError', async () => {
    // Prepare
    const dns = Object.assign(new Error('getaddrinfo ENOTFOUND bedrock-runtime'), { code: 'ENOTFOUND' });
    const wrapped = new Error('request failed', {
      cause: Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }),
    });
    mock.on(ConverseCommand).rejectsOnce(dns).rejectsOnce(wrapped);

    // Act
    const first = await model.generate(generateRequest).catch((e: unknown) => e);
    const second = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(first).toBeInstanceOf(ModelTransientError);
    expect(second).toBeInstanceOf(ModelTransientError);
  });

  it('surfaces AccessDeniedException as ModelConfigError', async () => {
    // Prepare
    mock
      .on(ConverseCommand)
      .rejects(
        new AccessDeniedException({ message: 'no access to model', $metadata: { httpStatusCode: 403 } }),
      );

    // Act
    const error = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelConfigError);
  });

  it('surfaces a missing region or missing credentials as ModelConfigError saying what to set', async () => {
    // Prepare
    const noCredentials = Object.assign(new Error('Could not load credentials from any providers'), {
      name: 'CredentialsProviderError',
    });
    mock.on(ConverseCommand).rejectsOnce(new Error('Region is missing')).rejectsOnce(noCredentials);

    // Act
    const first = await model.generate(generateRequest).catch((e: unknown) => e);
    const second = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(first).toBeInstanceOf(ModelConfigError);
    expect(second).toBeInstanceOf(ModelConfigError);
    expect((first as Error).message).toMatch(/Region is missing .*AWS_REGION/);
  });

  it('treats a ValidationException about the model identifier as ModelConfigError, others as ModelRequestError', async () => {
    // Prepare
    const badModel = new ValidationException({
      message: 'The provided model identifier is invalid.',
      $metadata: { httpStatusCode: 400 },
    });
    const tooLong = new ValidationException({
      message: 'Input is too long for requested model.',
      $metadata: { httpStatusCode: 400 },
    });
    mock.on(ConverseCommand).rejectsOnce(badModel).rejectsOnce(tooLong);

    // Act
    const first = await model.generate(generateRequest).catch((e: unknown) => e);
    const second = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(first).toBeInstanceOf(ModelConfigError);
    expect(second).toBeInstanceOf(ModelRequestError);
  });

  it('throws ModelRefusedError with usage when a guardrail intervenes', async () => {
    // Prepare
    mock
      .on(ConverseCommand)
      .resolves(textAnswer('Sorry, the model cannot answer this.', 'guardrail_intervened'));

    // Act
    const error = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelRefusedError);
    expect((error as ModelRefusedError).usage).toEqual({ inputTokens: 12, outputTokens: 7 });
  });

  it('generates the concatenated, trimmed text and its usage', async () => {
    // Prepare
    mock.on(ConverseCommand).resolves({
      ...textAnswer(''),
      output: { message: { role: 'assistant', content: [{ text: '  Hello' }, { text: ', world.\n' }] } },
    });

    // Act
    const result = await model.generate(generateRequest);

    // Assess
    expect(result).toEqual({ text: 'Hello, world.', usage: { inputTokens: 12, outputTokens: 7 } });
    const input = mock.commandCalls(ConverseCommand)[0]?.args[0].input;
    expect(input?.toolConfig).toBeUndefined();
    expect(input?.inferenceConfig).toEqual({ maxTokens: 50, temperature: 0.7 });
  });

  it('without tool use, asks for JSON in the prompt and parses it from the text', async () => {
    // Prepare
    const noTools = new BedrockModelClient({
      spec: 'bedrock:some.model',
      modelId: 'some.model',
      client: new BedrockRuntimeClient({ region: 'us-east-1' }),
      toolUse: false,
    });
    mock
      .on(ConverseCommand)
      .resolves(textAnswer('Here you go:\n```json\n{"score": 3, "rationale": "ok"}\n```'));

    // Act
    const result = await noTools.judge(judgeRequest);

    // Assess
    expect(result.value).toEqual({ score: 3, rationale: 'ok' });
    const input = mock.commandCalls(ConverseCommand)[0]?.args[0].input;
    expect(input?.toolConfig).toBeUndefined();
    const prompt = input?.messages?.[0]?.content?.[0]?.text ?? '';
    expect(prompt.startsWith('Grade this instruction.')).toBe(true);
    expect(prompt).toContain(JSON.stringify(jsonSchemaOf(Verdict)));
  });

  it('falls back to JSON text for a model that rejects tool use, and stays there', async () => {
    // Prepare
    const model = new BedrockModelClient({
      spec: 'bedrock:old.model',
      modelId: 'old.model',
      client: new BedrockRuntimeClient({ region: 'us-east-1' }),
    });
    mock
      .on(ConverseCommand)
      .rejectsOnce(
        new ValidationException({ $metadata: {}, message: "This model doesn't support tool use." }),
      )
      .resolves(textAnswer('{"score": 4, "rationale": "fine"}'));

    // Act
    const first = await model.judge(judgeRequest);
    const second = await model.judge(judgeRequest);

    // Assess
    expect([first.value, second.value]).toEqual([
      { score: 4, rationale: 'fine' },
      { score: 4, rationale: 'fine' },
    ]);
    const calls = mock.commandCalls(ConverseCommand).map((c) => c.args[0].input.toolConfig !== undefined);
    expect(calls).toEqual([true, false, false]);
  });
});
