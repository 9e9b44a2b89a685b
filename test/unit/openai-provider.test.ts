import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  JudgeAnswerError,
  ModelConfigError,
  ModelRefusedError,
  ModelRequestError,
  ModelThrottledError,
  ModelTransientError,
} from '../../lib/pipeline/errors.js';
import { OpenAiModelClient } from '../../lib/pipeline/models/openai.js';

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

interface Call {
  url: string;
  init: RequestInit;
  body: Record<string, unknown>;
}

/** A fetch that records each call and answers with the given responses in turn. */
function fakeFetch(...answers: (Response | Error)[]): { fetch: typeof globalThis.fetch; calls: Call[] } {
  const calls: Call[] = [];
  const fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    calls.push({ url: String(input), init: init ?? {}, body: JSON.parse(String(init?.body)) });
    const answer = answers.shift();
    if (!answer) throw new Error('unexpected fetch');
    if (answer instanceof Error) throw answer;
    return answer;
  };
  return { fetch: fetch as typeof globalThis.fetch, calls };
}

function completion(content: string | null, finishReason = 'stop', usage: unknown = undefined): Response {
  return Response.json({
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: finishReason }],
    ...(usage === undefined
      ? { usage: { prompt_tokens: 11, completion_tokens: 5 } }
      : usage === null
        ? {}
        : { usage }),
  });
}

function client(fetch: typeof globalThis.fetch, baseURL = 'http://localhost:8000/v1'): OpenAiModelClient {
  return new OpenAiModelClient({
    spec: `openai:${baseURL}#m`,
    baseURL,
    model: 'm',
    apiKey: 'sk-test',
    fetch,
  });
}

describe('OpenAiModelClient', () => {
  it('posts a chat completion with system and user messages and returns trimmed text and usage', async () => {
    // Prepare
    const { fetch, calls } = fakeFetch(completion('  Hi there.\n'));

    // Act
    const result = await client(fetch).generate(generateRequest);

    // Assess
    expect(result).toEqual({ text: 'Hi there.', usage: { inputTokens: 11, outputTokens: 5 } });
    const [call] = calls;
    expect(call?.url).toBe('http://localhost:8000/v1/chat/completions');
    expect(call?.init.method).toBe('POST');
    expect(call?.init.headers).toMatchObject({ authorization: 'Bearer sk-test' });
    expect(call?.init.signal).toBeInstanceOf(AbortSignal);
    expect(call?.body).toEqual({
      model: 'm',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Say hi.' },
      ],
      max_tokens: 50,
      temperature: 0.7,
    });
  });

  it('joins a base URL with a trailing slash without doubling it', async () => {
    // Prepare
    const { fetch, calls } = fakeFetch(completion('ok'));

    // Act
    await client(fetch, 'https://api.example.com/v1/').generate(generateRequest);

    // Assess
    expect(calls[0]?.url).toBe('https://api.example.com/v1/chat/completions');
  });

  it('rejects an unparseable base URL as ModelConfigError when constructed', () => {
    // Prepare
    const { fetch } = fakeFetch();

    // Act
    const construct = () => client(fetch, 'not a url');

    // Assess
    expect(construct).toThrow(ModelConfigError);
  });

  it('asks the judge for a strict json_schema response format derived from the zod schema', async () => {
    // Prepare
    const { fetch, calls } = fakeFetch(completion('{"score": 5, "rationale": "clear"}'));

    // Act
    const result = await client(fetch).judge(judgeRequest);

    // Assess
    expect(result).toEqual({
      value: { score: 5, rationale: 'clear' },
      usage: { inputTokens: 11, outputTokens: 5 },
    });
    expect(calls[0]?.body.response_format).toEqual({
      type: 'json_schema',
      json_schema: {
        name: 'grade',
        strict: true,
        schema: {
          type: 'object',
          properties: {
            score: { type: 'integer', minimum: 1, maximum: 5 },
            rationale: { type: 'string' },
          },
          required: ['score', 'rationale'],
          additionalProperties: false,
        },
      },
    });
  });

  it('sends a schema with optional properties non-strict, since strict mode would reject it', async () => {
    // Prepare
    const { fetch, calls } = fakeFetch(completion('{"score": 2}'));
    const schema = z.object({ score: z.number(), note: z.string().optional() });

    // Act
    await client(fetch).judge({ ...judgeRequest, schema });

    // Assess
    const format = calls[0]?.body.response_format as { json_schema: { strict: boolean } };
    expect(format.json_schema.strict).toBe(false);
  });

  it('falls back to the first JSON object in the text when the content is not pure JSON', async () => {
    // Prepare
    const { fetch } = fakeFetch(completion('Sure!\n```json\n{"score": 3, "rationale": "ok"}\n```'));

    // Act
    const result = await client(fetch).judge(judgeRequest);

    // Assess
    expect(result.value).toEqual({ score: 3, rationale: 'ok' });
  });

  it('throws JudgeAnswerError with usage when the answer breaks the schema or has no JSON', async () => {
    // Prepare
    const { fetch } = fakeFetch(completion('{"score": 7, "rationale": "x"}'), completion('no json here'));
    const model = client(fetch);

    // Act
    const offSchema = await model.judge(judgeRequest).catch((e: unknown) => e);
    const noJson = await model.judge(judgeRequest).catch((e: unknown) => e);

    // Assess
    expect(offSchema).toBeInstanceOf(JudgeAnswerError);
    expect((offSchema as JudgeAnswerError).usage).toEqual({ inputTokens: 11, outputTokens: 5 });
    expect(noJson).toBeInstanceOf(JudgeAnswerError);
  });

  it('reports zero usage when the server omits it', async () => {
    // Prepare
    const { fetch } = fakeFetch(completion('ok', 'stop', null));

    // Act
    const result = await client(fetch).generate(generateRequest);

    // Assess
    expect(result.usage).toEqual({ inputTokens: 0, outputTokens: 0 });
  });

  it('throws ModelRefusedError with usage when the content filter stops the answer', async () => {
    // Prepare
    const { fetch } = fakeFetch(completion(null, 'content_filter'));

    // Act
    const error = await client(fetch)
      .generate(generateRequest)
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelRefusedError);
    expect((error as ModelRefusedError).usage).toEqual({ inputTokens: 11, outputTokens: 5 });
  });

  it.each([
    [429, 'ModelThrottledError', ModelThrottledError],
    [500, 'ModelTransientError', ModelTransientError],
    [503, 'ModelTransientError', ModelTransientError],
    [401, 'ModelConfigError', ModelConfigError],
    [403, 'ModelConfigError', ModelConfigError],
    [404, 'ModelConfigError', ModelConfigError],
    [400, 'ModelRequestError', ModelRequestError],
    [422, 'ModelRequestError', ModelRequestError],
  ])('maps HTTP %i to %s', async (status, _name, errorClass) => {
    // Prepare
    const body = { error: { message: `status ${status}`, type: 'x' } };
    const { fetch } = fakeFetch(Response.json(body, { status }));

    // Act
    const error = await client(fetch)
      .generate(generateRequest)
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(errorClass);
    expect((error as Error).message).toContain(`status ${status}`);
  });

  it('maps a connection failure and a timeout to ModelTransientError', async () => {
    // Prepare
    const refused = new TypeError('fetch failed', {
      cause: Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }),
    });
    const timeout = new DOMException('The operation was aborted due to timeout', 'TimeoutError');
    const { fetch } = fakeFetch(refused, timeout);
    const model = client(fetch);

    // Act
    const first = await model.generate(generateRequest).catch((e: unknown) => e);
    const second = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(first).toBeInstanceOf(ModelTransientError);
    expect((first as Error).cause).toBe(refused);
    expect(second).toBeInstanceOf(ModelTransientError);
  });

  it('bounds each request with the configured timeout', async () => {
    // Prepare
    const hanging = (async (_input: string | URL | Request, init?: RequestInit) =>
      new Promise<Response>((_resolve, reject) => {
        init?.signal?.addEventListener('abort', () => reject(init.signal?.reason));
      })) as typeof globalThis.fetch;
    const model = new OpenAiModelClient({
      spec: 'openai:http://localhost:1/v1#m',
      baseURL: 'http://localhost:1/v1',
      model: 'm',
      fetch: hanging,
      timeoutMs: 50,
    });

    // Act
    const error = await model.generate(generateRequest).catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelTransientError);
  });
});
