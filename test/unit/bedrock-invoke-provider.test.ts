import { Readable } from 'node:stream';
import {
  AccessDeniedException,
  BedrockRuntimeClient,
  InvokeModelCommand,
  type InvokeModelCommandOutput,
  ModelErrorException,
  ModelNotReadyException,
  ModelTimeoutException,
  ResourceNotFoundException,
  ServiceQuotaExceededException,
  ServiceUnavailableException,
  ThrottlingException,
  ValidationException,
} from '@aws-sdk/client-bedrock-runtime';
import { Uint8ArrayBlobAdapter } from '@smithy/util-stream';
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
import { BedrockInvokeModelClient } from '../../lib/pipeline/models/bedrock-invoke.js';
import { jsonSchemaOf } from '../../lib/pipeline/models/model-client.js';
import { type InvokeBody, ModelRegistry } from '../../lib/pipeline/models/registry.js';

const PROVISIONED_ARN = 'arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123';
const CUSTOM_ARN =
  'arn:aws:bedrock:us-east-1:123456789012:custom-model/meta.llama3-1-8b-instruct-v1:0:128k/abc123';
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
const SENT_PROMPT = 'Be brief.\n\nSay hi.';

function answer(body: unknown): InvokeModelCommandOutput {
  return {
    $metadata: { httpStatusCode: 200 },
    body: Uint8ArrayBlobAdapter.fromString(typeof body === 'string' ? body : JSON.stringify(body)),
    contentType: 'application/json',
  };
}

const mockRuntime = () => mockClient(BedrockRuntimeClient);
type Mock = ReturnType<typeof mockRuntime>;

/** The JSON body of the `index`th InvokeModel call. */
function sentBody(mock: Mock, index = 0): Record<string, unknown> {
  const input = mock.commandCalls(InvokeModelCommand)[index]?.args[0].input;
  return JSON.parse(new TextDecoder().decode(input?.body as Uint8Array));
}

function model(body: InvokeBody, modelId = PROVISIONED_ARN, client?: BedrockRuntimeClient) {
  return new BedrockInvokeModelClient({
    spec: `bedrock-custom:${modelId}#${body}`,
    modelId,
    body,
    client: client ?? new BedrockRuntimeClient({ region: 'us-east-1' }),
  });
}

const families: {
  body: InvokeBody;
  request: Record<string, unknown>;
  response: unknown;
  usage: { inputTokens: number; outputTokens: number };
}[] = [
  {
    body: 'llama',
    request: { prompt: SENT_PROMPT, max_gen_len: 50, temperature: 0.7 },
    response: { generation: ' Hi! ', prompt_token_count: 9, generation_token_count: 3, stop_reason: 'stop' },
    usage: { inputTokens: 9, outputTokens: 3 },
  },
  {
    body: 'titan',
    request: { inputText: SENT_PROMPT, textGenerationConfig: { maxTokenCount: 50, temperature: 0.7 } },
    response: {
      inputTextTokenCount: 8,
      results: [{ tokenCount: 2, outputText: '\nHi!', completionReason: 'FINISH' }],
    },
    usage: { inputTokens: 8, outputTokens: 2 },
  },
  {
    body: 'cohere',
    request: { prompt: SENT_PROMPT, max_tokens: 50, temperature: 0.7 },
    response: { id: 'g1', generations: [{ id: 'x', text: 'Hi!', finish_reason: 'COMPLETE' }], prompt: '' },
    // Cohere's body has no token counts: ceil(18 chars / 4) in, ceil(3 / 4) out.
    usage: { inputTokens: 5, outputTokens: 1 },
  },
  {
    body: 'mistral',
    request: { prompt: SENT_PROMPT, max_tokens: 50, temperature: 0.7 },
    response: { outputs: [{ text: ' Hi!', stop_reason: 'stop' }] },
    // Mistral's body has no token counts: ceil(18 / 4) in, ceil(4 / 4) out.
    usage: { inputTokens: 5, outputTokens: 1 },
  },
  {
    body: 'completion',
    request: { prompt: SENT_PROMPT, max_tokens: 50, temperature: 0.7 },
    response: {
      id: 'cmpl-1',
      object: 'text_completion',
      choices: [{ index: 0, text: 'Hi!\n', finish_reason: 'stop' }],
      usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 },
    },
    usage: { inputTokens: 7, outputTokens: 2 },
  },
];

describe('BedrockInvokeModelClient', () => {
  let mock: Mock;

  beforeEach(() => {
    mock = mockRuntime();
  });

  afterEach(() => {
    mock.restore();
  });

  it.each(families)('sends the raw $body body and reads its text and usage', async (family) => {
    // Prepare
    mock.on(InvokeModelCommand).resolves(answer(family.response));

    // Act
    const result = await model(family.body).generate(generateRequest);

    // Assess
    expect(sentBody(mock)).toEqual(family.request);
    expect(result).toEqual({ text: 'Hi!', usage: family.usage });
  });

  it('invokes the model id with JSON in and out', async () => {
    // Prepare
    mock.on(InvokeModelCommand).resolves(answer({ generation: 'Hi!' }));

    // Act
    await model('llama').generate(generateRequest);

    // Assess
    const input = mock.commandCalls(InvokeModelCommand)[0]?.args[0].input;
    expect(input).toMatchObject({
      modelId: PROVISIONED_ARN,
      contentType: 'application/json',
      accept: 'application/json',
    });
    expect(input?.body).toBeInstanceOf(Uint8Array);
  });

  it('sends the prompt alone, with no blank line, when the system prompt is empty or blank', async () => {
    // Prepare
    mock.on(InvokeModelCommand).resolves(answer({ generation: 'Hi!' }));
    const llama = model('llama');

    // Act
    await llama.generate({ ...generateRequest, system: '' });
    await llama.generate({ ...generateRequest, system: '  \n' });

    // Assess
    expect(sentBody(mock, 0).prompt).toBe('Say hi.');
    expect(sentBody(mock, 1).prompt).toBe('Say hi.');
  });

  it('estimates a count the llama body leaves out as ceil(characters / 4)', async () => {
    // Prepare
    mock.on(InvokeModelCommand).resolves(answer({ generation: 'Hello there', generation_token_count: 2 }));

    // Act
    const result = await model('llama').generate(generateRequest);

    // Assess
    expect(result.usage).toEqual({ inputTokens: Math.ceil(SENT_PROMPT.length / 4), outputTokens: 2 });
  });

  it('throws ModelRefusedError with usage when Titan filters the content', async () => {
    // Prepare
    mock.on(InvokeModelCommand).resolves(
      answer({
        inputTextTokenCount: 8,
        results: [{ tokenCount: 0, outputText: '', completionReason: 'CONTENT_FILTERED' }],
      }),
    );

    // Act
    const error = await model('titan')
      .generate(generateRequest)
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelRefusedError);
    expect((error as ModelRefusedError).usage).toEqual({ inputTokens: 8, outputTokens: 0 });
  });

  it('throws ModelConfigError naming the model and the family when the body is another shape', async () => {
    // Prepare
    mock.on(InvokeModelCommand).resolves(answer({ outputs: [{ text: 'Hi!' }] }));

    // Act
    const error = await model('llama')
      .generate(generateRequest)
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelConfigError);
    expect((error as Error).message).toContain(PROVISIONED_ARN);
    expect((error as Error).message).toMatch(/not a llama body .*generation.*#mistral/);
  });

  it('throws ModelTransientError naming the model when the body is not JSON', async () => {
    // Prepare
    mock.on(InvokeModelCommand).resolves(answer('<html>502 Bad Gateway</html>'));

    // Act
    const error = await model('llama')
      .generate(generateRequest)
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelTransientError);
    expect((error as Error).message).toContain(PROVISIONED_ARN);
  });

  it('validates a judge answer given as JSON text against the zod schema', async () => {
    // Prepare
    mock.on(InvokeModelCommand).resolves(
      answer({
        generation: 'Here it is: {"score": 4, "rationale": "clear"}',
        prompt_token_count: 90,
        generation_token_count: 12,
      }),
    );

    // Act
    const result = await model('llama').judge(judgeRequest);

    // Assess
    expect(result).toEqual({
      value: { score: 4, rationale: 'clear' },
      usage: { inputTokens: 90, outputTokens: 12 },
    });
    const prompt = String(sentBody(mock).prompt);
    expect(prompt.startsWith('You grade instructions.\n\nGrade this instruction.\n\n')).toBe(true);
    expect(prompt).toContain(JSON.stringify(jsonSchemaOf(Verdict)));
    expect(sentBody(mock).temperature).toBe(0);
  });

  it('throws JudgeAnswerError carrying the usage when the judge answer is off-schema or not JSON', async () => {
    // Prepare
    mock
      .on(InvokeModelCommand)
      .resolvesOnce(answer({ generation: '{"score": 9}', prompt_token_count: 90, generation_token_count: 5 }))
      .resolvesOnce(
        answer({ generation: 'I would say four.', prompt_token_count: 90, generation_token_count: 5 }),
      );
    const llama = model('llama');

    // Act
    const offSchema = await llama.judge(judgeRequest).catch((e: unknown) => e);
    const noJson = await llama.judge(judgeRequest).catch((e: unknown) => e);

    // Assess
    expect(offSchema).toBeInstanceOf(JudgeAnswerError);
    expect((offSchema as JudgeAnswerError).message).toMatch(/off-schema: score/);
    expect((offSchema as JudgeAnswerError).usage).toEqual({ inputTokens: 90, outputTokens: 5 });
    expect(noJson).toBeInstanceOf(JudgeAnswerError);
  });

  it('surfaces throttling and a daily quota as ModelThrottledError with the SDK error as cause', async () => {
    // Prepare
    const throttle = new ThrottlingException({
      message: 'Too many requests',
      $metadata: { httpStatusCode: 429 },
    });
    const quota = new ServiceQuotaExceededException({
      message: 'Daily token quota exceeded',
      $metadata: { httpStatusCode: 400 },
    });
    mock.on(InvokeModelCommand).rejectsOnce(throttle).rejectsOnce(quota);
    const llama = model('llama');

    // Act
    const first = await llama.generate(generateRequest).catch((e: unknown) => e);
    const second = await llama.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(first).toBeInstanceOf(ModelThrottledError);
    expect((first as Error).cause).toBe(throttle);
    expect(second).toBeInstanceOf(ModelThrottledError);
  });

  it('surfaces a 503, an unnamed 502, a model timeout, a model not ready and a connection reset as ModelTransientError', async () => {
    // Prepare
    mock
      .on(InvokeModelCommand)
      .rejectsOnce(
        new ServiceUnavailableException({ message: 'unavailable', $metadata: { httpStatusCode: 503 } }),
      )
      .rejectsOnce(
        Object.assign(new Error('bad gateway'), { name: 'Unknown', $metadata: { httpStatusCode: 502 } }),
      )
      .rejectsOnce(new ModelTimeoutException({ message: 'timed out', $metadata: { httpStatusCode: 408 } }))
      .rejectsOnce(new ModelNotReadyException({ message: 'loading', $metadata: { httpStatusCode: 429 } }))
      .rejectsOnce(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    const llama = model('llama');

    // Act
    const errors: unknown[] = [];
    for (let i = 0; i < 5; i++) errors.push(await llama.generate(generateRequest).catch((e: unknown) => e));

    // Assess
    for (const error of errors) expect(error).toBeInstanceOf(ModelTransientError);
  });

  it("reads an imported model's container error by its original status", async () => {
    // Prepare
    const modelError = (originalStatusCode: number) =>
      new ModelErrorException({
        message: `container answered ${originalStatusCode}`,
        originalStatusCode,
        $metadata: { httpStatusCode: 424 },
      });
    mock
      .on(InvokeModelCommand)
      .rejectsOnce(modelError(500))
      .rejectsOnce(modelError(429))
      .rejectsOnce(modelError(400));
    const llama = model('llama');

    // Act
    const failing = await llama.generate(generateRequest).catch((e: unknown) => e);
    const busy = await llama.generate(generateRequest).catch((e: unknown) => e);
    const rejected = await llama.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(failing).toBeInstanceOf(ModelTransientError);
    expect(busy).toBeInstanceOf(ModelThrottledError);
    expect(rejected).toBeInstanceOf(ModelRequestError);
  });

  it('surfaces a custom model without serving as ModelConfigError saying it needs provisioned throughput or a deployment', async () => {
    // Prepare
    mock
      .on(InvokeModelCommand)
      .rejectsOnce(
        new ResourceNotFoundException({ message: 'Model not found', $metadata: { httpStatusCode: 404 } }),
      )
      .rejectsOnce(
        new ValidationException({
          message: 'The provided model identifier is invalid.',
          $metadata: { httpStatusCode: 400 },
        }),
      );
    const custom = model('llama', CUSTOM_ARN);

    // Act
    const notFound = await custom.generate(generateRequest).catch((e: unknown) => e);
    const invalid = await custom.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    for (const error of [notFound, invalid]) {
      expect(error).toBeInstanceOf(ModelConfigError);
      expect((error as Error).message).toContain(CUSTOM_ARN);
      expect((error as Error).message).toMatch(/needs provisioned throughput or a custom model deployment/);
    }
  });

  it('surfaces access denied and a body of the wrong family as ModelConfigError, a too-long prompt as ModelRequestError', async () => {
    // Prepare
    mock
      .on(InvokeModelCommand)
      .rejectsOnce(new AccessDeniedException({ message: 'no access', $metadata: { httpStatusCode: 403 } }))
      .rejectsOnce(
        new ValidationException({
          message: 'Malformed input request: #: extraneous key [max_gen_len] is not permitted',
          $metadata: { httpStatusCode: 400 },
        }),
      )
      .rejectsOnce(
        new ValidationException({
          message: 'Input is too long for requested model.',
          $metadata: { httpStatusCode: 400 },
        }),
      );
    const llama = model('llama');

    // Act
    const denied = await llama.generate(generateRequest).catch((e: unknown) => e);
    const wrongFamily = await llama.generate(generateRequest).catch((e: unknown) => e);
    const tooLong = await llama.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(denied).toBeInstanceOf(ModelConfigError);
    expect(wrongFamily).toBeInstanceOf(ModelConfigError);
    expect((wrongFamily as Error).message).toMatch(/does not speak the llama body/);
    expect(tooLong).toBeInstanceOf(ModelRequestError);
  });

  it('surfaces missing credentials as ModelConfigError saying what to set', async () => {
    // Prepare
    mock.on(InvokeModelCommand).rejects(
      Object.assign(new Error('Could not load credentials from any providers'), {
        name: 'CredentialsProviderError',
      }),
    );

    // Act
    const error = await model('llama')
      .generate(generateRequest)
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelConfigError);
    expect((error as Error).message).toMatch(/AWS_REGION/);
  });

  it('is what the registry builds for a bedrock-custom spec, with the body its ARN names', async () => {
    // Prepare
    const registry = new ModelRegistry();

    // Act
    const client = await registry.get(`bedrock-custom:${CUSTOM_ARN}`);

    // Assess
    expect(client).toBeInstanceOf(BedrockInvokeModelClient);
    expect((client as BedrockInvokeModelClient).body).toBe('llama');
    expect(client.modelId).toBe(CUSTOM_ARN);
    expect(client.spec).toBe(`bedrock-custom:${CUSTOM_ARN}`);
  });
});

describe('BedrockInvokeModelClient over HTTP', () => {
  /** A runtime client whose HTTP layer answers every request with `headers` and `body`. */
  function clientAnswering(headers: Record<string, string>, body: unknown): BedrockRuntimeClient {
    return new BedrockRuntimeClient({
      region: 'us-east-1',
      credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' },
      maxAttempts: 1,
      requestHandler: {
        handle: async () => ({
          response: {
            statusCode: 200,
            headers: { 'content-type': 'application/json', ...headers },
            body: Readable.from([Buffer.from(JSON.stringify(body))]),
          },
        }),
      } as never,
    });
  }

  it('reads the token counts from the x-amzn-bedrock headers when the body has none', async () => {
    // Prepare
    const client = clientAnswering(
      { 'x-amzn-bedrock-input-token-count': '21', 'x-amzn-bedrock-output-token-count': '4' },
      { outputs: [{ text: 'Hi!', stop_reason: 'stop' }] },
    );

    // Act
    const result = await model('mistral', PROVISIONED_ARN, client).generate(generateRequest);

    // Assess
    expect(result).toEqual({ text: 'Hi!', usage: { inputTokens: 21, outputTokens: 4 } });
  });

  it("prefers the body's token counts to the headers'", async () => {
    // Prepare
    const client = clientAnswering(
      { 'x-amzn-bedrock-input-token-count': '21', 'x-amzn-bedrock-output-token-count': '4' },
      { generation: 'Hi!', prompt_token_count: 20, generation_token_count: 3 },
    );

    // Act
    const result = await model('llama', PROVISIONED_ARN, client).generate(generateRequest);

    // Assess
    expect(result.usage).toEqual({ inputTokens: 20, outputTokens: 3 });
  });
});
