import {
  InternalFailure,
  InvokeEndpointCommand,
  type InvokeEndpointCommandOutput,
  ModelError,
  ModelNotReadyException,
  SageMakerRuntimeClient,
  ServiceUnavailable,
  ValidationError,
} from '@aws-sdk/client-sagemaker-runtime';
import { Uint8ArrayBlobAdapter } from '@smithy/util-stream';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  JudgeAnswerError,
  ModelConfigError,
  ModelRequestError,
  ModelThrottledError,
  ModelTransientError,
} from '../../lib/pipeline/errors.js';
import { jsonSchemaOf } from '../../lib/pipeline/models/model-client.js';
import { ModelRegistry, type SageMakerPayload } from '../../lib/pipeline/models/registry.js';
import { SageMakerModelClient } from '../../lib/pipeline/models/sagemaker.js';

const ENDPOINT = 'induce-llama-endpoint';
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

function answer(body: unknown): InvokeEndpointCommandOutput {
  return {
    $metadata: { httpStatusCode: 200 },
    Body: Uint8ArrayBlobAdapter.fromString(typeof body === 'string' ? body : JSON.stringify(body)),
    ContentType: 'application/json',
  };
}

function chatAnswer(content: string | null, finishReason = 'stop'): unknown {
  return {
    object: 'chat.completion',
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: finishReason }],
    usage: { prompt_tokens: 14, completion_tokens: 6, total_tokens: 20 },
  };
}

const mockRuntime = () => mockClient(SageMakerRuntimeClient);
type Mock = ReturnType<typeof mockRuntime>;

/** The JSON body of the `index`th InvokeEndpoint call. */
function sentBody(mock: Mock, index = 0): Record<string, unknown> {
  const input = mock.commandCalls(InvokeEndpointCommand)[index]?.args[0].input;
  return JSON.parse(new TextDecoder().decode(input?.Body as Uint8Array));
}

function model(payload: SageMakerPayload) {
  return new SageMakerModelClient({
    spec: `sagemaker:${ENDPOINT}#${payload}`,
    endpoint: ENDPOINT,
    payload,
    client: new SageMakerRuntimeClient({ region: 'us-east-1' }),
  });
}

const failure = (name: string, status: number, message = name) =>
  Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status } });

describe('SageMakerModelClient', () => {
  let mock: Mock;

  beforeEach(() => {
    mock = mockRuntime();
  });

  afterEach(() => {
    mock.restore();
  });

  it('sends a TGI inputs payload with the raw prompt and reads the generated text and tokens', async () => {
    // Prepare
    mock.on(InvokeEndpointCommand).resolves(
      answer([
        {
          generated_text: ' Hi!\n',
          details: { finish_reason: 'eos_token', generated_tokens: 3, seed: null },
        },
      ]),
    );

    // Act
    const result = await model('tgi').generate(generateRequest);

    // Assess
    expect(sentBody(mock)).toEqual({
      inputs: SENT_PROMPT,
      parameters: {
        max_new_tokens: 50,
        do_sample: true,
        temperature: 0.7,
        return_full_text: false,
        details: true,
      },
    });
    // TGI reports no input tokens: ceil(18 characters / 4).
    expect(result).toEqual({ text: 'Hi!', usage: { inputTokens: 5, outputTokens: 3 } });
    expect(mock.commandCalls(InvokeEndpointCommand)[0]?.args[0].input).toMatchObject({
      EndpointName: ENDPOINT,
      ContentType: 'application/json',
      Accept: 'application/json',
    });
  });

  it('asks TGI for greedy decoding, without a temperature, when the temperature is 0', async () => {
    // Prepare
    mock.on(InvokeEndpointCommand).resolves(answer([{ generated_text: 'Hi!' }]));

    // Act
    await model('tgi').generate({ ...generateRequest, temperature: 0 });

    // Assess
    const parameters = sentBody(mock).parameters as Record<string, unknown>;
    expect(parameters.do_sample).toBe(false);
    expect(parameters).not.toHaveProperty('temperature');
  });

  it('reads an LMI answer given as one object, and estimates the tokens it leaves out', async () => {
    // Prepare
    mock.on(InvokeEndpointCommand).resolves(answer({ generated_text: 'Hello there' }));

    // Act
    const result = await model('tgi').generate(generateRequest);

    // Assess
    expect(result).toEqual({ text: 'Hello there', usage: { inputTokens: 5, outputTokens: 3 } });
  });

  it('sends a messages payload with system and user messages and reads the content and usage', async () => {
    // Prepare
    mock.on(InvokeEndpointCommand).resolves(answer(chatAnswer('  Hi!  ')));

    // Act
    const result = await model('messages').generate(generateRequest);

    // Assess
    expect(sentBody(mock)).toEqual({
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Say hi.' },
      ],
      max_tokens: 50,
      temperature: 0.7,
    });
    expect(result).toEqual({ text: 'Hi!', usage: { inputTokens: 14, outputTokens: 6 } });
  });

  it('leaves the system prompt out of both payloads when it is empty or blank', async () => {
    // Prepare
    mock
      .on(InvokeEndpointCommand)
      .resolvesOnce(answer([{ generated_text: 'Hi!' }]))
      .resolvesOnce(answer(chatAnswer('Hi!')));

    // Act
    await model('tgi').generate({ ...generateRequest, system: '' });
    await model('messages').generate({ ...generateRequest, system: ' \n' });

    // Assess
    expect(sentBody(mock, 0).inputs).toBe('Say hi.');
    expect(sentBody(mock, 1).messages).toEqual([{ role: 'user', content: 'Say hi.' }]);
  });

  it('validates a judge answer given as JSON text against the zod schema, with the schema in the prompt', async () => {
    // Prepare
    mock
      .on(InvokeEndpointCommand)
      .resolves(answer(chatAnswer('```json\n{"score": 5, "rationale": "clear"}\n```')));

    // Act
    const result = await model('messages').judge(judgeRequest);

    // Assess
    expect(result).toEqual({
      value: { score: 5, rationale: 'clear' },
      usage: { inputTokens: 14, outputTokens: 6 },
    });
    const body = sentBody(mock);
    expect(body).not.toHaveProperty('response_format');
    const [, user] = body.messages as { content: string }[];
    expect(user?.content.startsWith('Grade this instruction.\n\n')).toBe(true);
    expect(user?.content).toContain(JSON.stringify(jsonSchemaOf(Verdict)));
  });

  it('validates a TGI judge answer and throws JudgeAnswerError with usage when it is off-schema', async () => {
    // Prepare
    mock
      .on(InvokeEndpointCommand)
      .resolvesOnce(
        answer([{ generated_text: '{"score": 2, "rationale": "vague"}', details: { generated_tokens: 9 } }]),
      )
      .resolvesOnce(answer([{ generated_text: '{"score": "high"}', details: { generated_tokens: 4 } }]));
    const tgi = model('tgi');

    // Act
    const good = await tgi.judge(judgeRequest);
    const offSchema = await tgi.judge(judgeRequest).catch((e: unknown) => e);

    // Assess
    expect(good.value).toEqual({ score: 2, rationale: 'vague' });
    expect(
      String(sentBody(mock).inputs).startsWith('You grade instructions.\n\nGrade this instruction.'),
    ).toBe(true);
    expect(offSchema).toBeInstanceOf(JudgeAnswerError);
    expect((offSchema as JudgeAnswerError).message).toMatch(/off-schema: score/);
    expect((offSchema as JudgeAnswerError).usage.outputTokens).toBe(4);
  });

  it('throws ModelConfigError naming the endpoint when the answer is not the payload it asked for', async () => {
    // Prepare
    mock.on(InvokeEndpointCommand).resolves(answer([{ generated_text: 'Hi!' }]));

    // Act
    const error = await model('messages')
      .generate(generateRequest)
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelConfigError);
    expect((error as Error).message).toMatch(
      new RegExp(`${ENDPOINT}: the response is not a messages answer.*#tgi`),
    );
  });

  it('throws ModelTransientError when the body is not JSON', async () => {
    // Prepare
    mock.on(InvokeEndpointCommand).resolves(answer('upstream connect error'));

    // Act
    const error = await model('tgi')
      .generate(generateRequest)
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelTransientError);
  });

  it('surfaces a ThrottlingException and a 429 as ModelThrottledError with the SDK error as cause', async () => {
    // Prepare
    const throttle = failure('ThrottlingException', 400, 'Rate exceeded');
    mock.on(InvokeEndpointCommand).rejectsOnce(throttle).rejectsOnce(failure('Unknown', 429));
    const tgi = model('tgi');

    // Act
    const first = await tgi.generate(generateRequest).catch((e: unknown) => e);
    const second = await tgi.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(first).toBeInstanceOf(ModelThrottledError);
    expect((first as Error).cause).toBe(throttle);
    expect(second).toBeInstanceOf(ModelThrottledError);
  });

  it('surfaces ServiceUnavailable, InternalFailure, an unnamed 5xx, a model not ready and a reset as ModelTransientError', async () => {
    // Prepare
    mock
      .on(InvokeEndpointCommand)
      .rejectsOnce(new ServiceUnavailable({ message: 'unavailable', $metadata: { httpStatusCode: 503 } }))
      .rejectsOnce(new InternalFailure({ message: 'internal', $metadata: { httpStatusCode: 500 } }))
      .rejectsOnce(failure('Unknown', 502))
      .rejectsOnce(new ModelNotReadyException({ message: 'not ready', $metadata: { httpStatusCode: 429 } }))
      .rejectsOnce(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    const tgi = model('tgi');

    // Act
    const errors: unknown[] = [];
    for (let i = 0; i < 5; i++) errors.push(await tgi.generate(generateRequest).catch((e: unknown) => e));

    // Assess
    for (const error of errors) expect(error).toBeInstanceOf(ModelTransientError);
  });

  it("reads a ModelError by the container's status: 5xx or none transient, 429 throttled, 422 this request", async () => {
    // Prepare
    const modelError = (OriginalStatusCode?: number) =>
      new ModelError({
        message: `Received error (${OriginalStatusCode}) from primary`,
        OriginalStatusCode,
        $metadata: { httpStatusCode: 424 },
      });
    mock
      .on(InvokeEndpointCommand)
      .rejectsOnce(modelError(500))
      .rejectsOnce(modelError(undefined))
      .rejectsOnce(modelError(429))
      .rejectsOnce(modelError(422));
    const tgi = model('tgi');

    // Act
    const errors: unknown[] = [];
    for (let i = 0; i < 4; i++) errors.push(await tgi.generate(generateRequest).catch((e: unknown) => e));

    // Assess
    expect(errors[0]).toBeInstanceOf(ModelTransientError);
    expect(errors[1]).toBeInstanceOf(ModelTransientError);
    expect(errors[2]).toBeInstanceOf(ModelThrottledError);
    expect(errors[3]).toBeInstanceOf(ModelRequestError);
  });

  it('surfaces a ValidationError (no such endpoint) and access denied as ModelConfigError naming the endpoint', async () => {
    // Prepare
    mock
      .on(InvokeEndpointCommand)
      .rejectsOnce(
        new ValidationError({
          message: `Endpoint ${ENDPOINT} of account 123456789012 not found.`,
          $metadata: { httpStatusCode: 400 },
        }),
      )
      .rejectsOnce(failure('AccessDeniedException', 403));
    const tgi = model('tgi');

    // Act
    const notFound = await tgi.generate(generateRequest).catch((e: unknown) => e);
    const denied = await tgi.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(notFound).toBeInstanceOf(ModelConfigError);
    expect((notFound as Error).message).toMatch(new RegExp(`check that endpoint ${ENDPOINT} exists`));
    expect(denied).toBeInstanceOf(ModelConfigError);
    expect((denied as Error).message).toContain(ENDPOINT);
  });

  it('names itself sagemaker:<endpoint> for the record and the price table', () => {
    // Prepare, Act
    const client = model('tgi');

    // Assess
    expect(client.modelId).toBe(`sagemaker:${ENDPOINT}`);
  });

  it('is what the registry builds for a sagemaker spec, with the payload its suffix names', async () => {
    // Prepare
    const registry = new ModelRegistry();

    // Act
    const messages = await registry.get('sagemaker:my-endpoint#messages');
    const tgi = await registry.get('sagemaker:my-endpoint');

    // Assess
    expect(messages).toBeInstanceOf(SageMakerModelClient);
    expect((messages as SageMakerModelClient).payload).toBe('messages');
    expect((messages as SageMakerModelClient).endpoint).toBe('my-endpoint');
    expect((tgi as SageMakerModelClient).payload).toBe('tgi');
  });
});
