import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { JudgeAnswerError, ModelConfigError, ModelRequestError } from '../../lib/pipeline/errors.js';
import {
  defaultModelCacheDir,
  LlamaModelClient,
  llamaThreads,
  toGbnfJsonSchema,
} from '../../lib/pipeline/models/llama.js';
import { jsonSchemaOf } from '../../lib/pipeline/models/model-client.js';
import { writeTinyGguf } from '../support/tiny-gguf.js';

const request = { system: 'You are terse.', prompt: 'Say hello.', maxTokens: 12, temperature: 0 };
const judgeSchema = z.object({ score: z.number().int().min(1).max(5), rationale: z.string() });
const judgeRequest = {
  system: 'You grade answers.',
  prompt: 'Grade this answer: "Paris is the capital of France."',
  maxTokens: 64,
  temperature: 0,
  toolName: 'grade',
  toolDescription: 'A 1-5 score and a one-line rationale.',
};

let dir: string;
let modelPath: string;
let client: LlamaModelClient;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'llama-provider-'));
  modelPath = join(dir, 'tiny.gguf');
  await writeTinyGguf(modelPath, { seed: 7 });
  client = new LlamaModelClient({ spec: `llama:${modelPath}`, source: modelPath, cacheDir: dir });
});

afterAll(async () => {
  await client?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('LlamaModelClient.generate', () => {
  it('returns trimmed text with the rendered prompt counted as input tokens', async () => {
    const result = await client.generate(request);

    expect(typeof result.text).toBe('string');
    expect(result.text).toBe(result.text.trim());
    expect(result.usage.inputTokens).toBeGreaterThan(request.system.length / 4);
    expect(result.usage.outputTokens).toBeGreaterThan(0);
    expect(result.usage.outputTokens).toBeLessThanOrEqual(request.maxTokens);
  });

  it('gives the same answer to the same request at temperature 0, whatever came between', async () => {
    const first = await client.generate(request);
    await client.generate({
      ...request,
      system: 'Another system prompt.',
      prompt: 'Something else entirely.',
    });

    const again = await client.generate(request);

    expect(again).toEqual(first);
  });

  it('counts more input tokens for a longer prompt', async () => {
    const short = await client.generate(request);

    const long = await client.generate({
      ...request,
      prompt: `${request.prompt} ${'More words here. '.repeat(10)}`,
    });

    expect(long.usage.inputTokens).toBeGreaterThan(short.usage.inputTokens + 50);
  });

  it('serves concurrent calls one at a time on a fresh client', async () => {
    const fresh = new LlamaModelClient({ spec: 'llama:tiny', source: modelPath });

    const results = await Promise.all([
      fresh.generate(request),
      fresh.generate(request),
      fresh.generate(request),
    ]);
    await fresh.close();

    expect(results.map((r) => r.text)).toEqual([results[0]?.text, results[0]?.text, results[0]?.text]);
  });

  it('keeps working for one client after another client of the same file closes', async () => {
    const other = new LlamaModelClient({ spec: 'llama:tiny', source: modelPath });
    await other.generate(request);

    await other.close();
    const result = await client.generate(request);

    expect(result.usage.inputTokens).toBeGreaterThan(0);
  });

  it('renders the prompt with the chat template stored in the GGUF and counts its tokens', async () => {
    const templated = join(dir, 'templated.gguf');
    const template =
      '{% for m in messages %}A message from the {{ m.role }} follows: {{ m.content }}\n{% endfor %}' +
      '{% if add_generation_prompt %}A message from the assistant follows: {% endif %}';
    await writeTinyGguf(templated, { seed: 7, chatTemplate: template });
    const llama = await getLlama({ gpu: false, build: 'never' });
    const model = await llama.loadModel({ modelPath: templated });
    const rendered =
      `A message from the system follows: ${request.system}\n` +
      `A message from the user follows: ${request.prompt}\nA message from the assistant follows: `;
    const wholeTextTokens = model.tokenize(rendered).length;
    await llama.dispose();
    const withTemplate = new LlamaModelClient({ spec: 'llama:templated', source: templated });

    const result = await withTemplate.generate(request);
    await withTemplate.close();

    // node-llama-cpp tokenizes the template's literal pieces and the messages apart, a few tokens more.
    expect(result.usage.inputTokens).toBeGreaterThanOrEqual(wholeTextTokens);
    expect(result.usage.inputTokens).toBeLessThanOrEqual(wholeTextTokens + 8);
  });

  it('rejects a prompt longer than the context as a ModelRequestError', async () => {
    const prompt = 'abc '.repeat(1500);

    const call = client.generate({ ...request, prompt });

    await expect(call).rejects.toBeInstanceOf(ModelRequestError);
  });
});

describe('LlamaModelClient.judge', () => {
  it('answers with a value the schema accepts, or a JudgeAnswerError that carries the usage', async () => {
    const outcome = await client.judge({ ...judgeRequest, schema: judgeSchema }).then(
      (result) => ({ ok: true as const, result }),
      (error: unknown) => ({ ok: false as const, error }),
    );

    if (outcome.ok) {
      expect(judgeSchema.safeParse(outcome.result.value).success).toBe(true);
      expect(outcome.result.usage.inputTokens).toBeGreaterThan(0);
    } else {
      expect(outcome.error).toBeInstanceOf(JudgeAnswerError);
      expect((outcome.error as JudgeAnswerError).usage.inputTokens).toBeGreaterThan(0);
      expect((outcome.error as JudgeAnswerError).usage.outputTokens).toBe(judgeRequest.maxTokens);
    }
  });

  it('forces a valid answer from random weights when the schema bounds every field', async () => {
    const bounded = z.object({ score: z.number().int().min(1).max(5), rationale: z.string().max(16) });

    const result = await client.judge({ ...judgeRequest, maxTokens: 200, schema: bounded });

    expect(bounded.parse(result.value)).toEqual(result.value);
    expect([1, 2, 3, 4, 5]).toContain(result.value.score);
    expect(result.usage.outputTokens).toBeGreaterThan(5);
  });

  it('throws JudgeAnswerError with usage when the answer is cut off by maxTokens', async () => {
    const call = client.judge({ ...judgeRequest, maxTokens: 3, schema: judgeSchema });

    await expect(call).rejects.toBeInstanceOf(JudgeAnswerError);
    await expect(call).rejects.toMatchObject({ usage: { outputTokens: 3 } });
  });
});

describe('LlamaModelClient model sources', () => {
  it('gives the weights a new identity when the file changes under the same path', async () => {
    const path = join(dir, 'swapped.gguf');
    await writeTinyGguf(path, { seed: 1 });
    const before = new LlamaModelClient({ spec: 'llama:swapped', source: path });
    const first = await before.identity();
    await before.close();
    await writeTinyGguf(path, { seed: 2, layers: 3 });
    const after = new LlamaModelClient({ spec: 'llama:swapped', source: path });

    const second = await after.identity();

    await after.close();
    expect(first).toMatch(/swapped\.gguf:\d+:/);
    expect(second).not.toBe(first);
  });

  it('reports a missing local file as ModelConfigError naming the path', async () => {
    const missing = join(dir, 'nope', 'missing.gguf');
    const absent = new LlamaModelClient({ spec: `llama:${missing}`, source: missing });

    const call = absent.generate(request);

    await expect(call).rejects.toBeInstanceOf(ModelConfigError);
    await expect(call).rejects.toThrow(missing);
  });

  it('reports a file that is not GGUF as ModelConfigError naming the path', async () => {
    const bogus = join(dir, 'bogus.gguf');
    await writeFile(bogus, 'this is not a model\n'.repeat(10));
    const notGguf = new LlamaModelClient({ spec: `llama:${bogus}`, source: bogus });

    const call = notGguf.generate(request);

    await expect(call).rejects.toBeInstanceOf(ModelConfigError);
    await expect(call).rejects.toThrow(bogus);
  });

  it('fails fast with a one-line ModelConfigError when an hf: model cannot be fetched', async () => {
    const source = 'hf:safer-instruct-test/no-such-model-GGUF/missing-q4_k_m.gguf';
    const cacheDir = await mkdtemp(join(tmpdir(), 'llama-cache-'));
    const remote = new LlamaModelClient({ spec: `llama:${source}`, source, cacheDir });
    const started = Date.now();

    const error = await remote.generate(request).catch((e: unknown) => e);
    await rm(cacheDir, { recursive: true, force: true });

    expect(error).toBeInstanceOf(ModelConfigError);
    expect((error as Error).message).toBe(
      `cannot fetch model ${source} (offline?): pick another with --model llama:<file.gguf>, ` +
        'bedrock:<modelId> or openai:<baseURL>#<model>',
    );
    expect((error as Error).message).not.toContain('\n');
    expect(Date.now() - started).toBeLessThan(15_000);
  });

  it('uses an hf: model already in the cache directory without fetching it', async () => {
    const cacheDir = join(dir, 'cache');
    await mkdir(cacheDir, { recursive: true });
    await writeTinyGguf(join(cacheDir, 'hf_someone_tiny.gguf'), { seed: 7 });
    const cached = new LlamaModelClient({
      spec: 'llama:hf',
      source: 'hf:someone/tiny-GGUF/tiny.gguf',
      cacheDir,
    });

    const result = await cached.generate(request);
    await cached.close();

    expect(result).toEqual(await client.generate(request));
  });
});

describe('llama provider settings', () => {
  it('keeps downloads under SAFER_INSTRUCT_CACHE_DIR, then XDG_CACHE_HOME, then ~/.cache', () => {
    const fromOwn = defaultModelCacheDir({ SAFER_INSTRUCT_CACHE_DIR: '/c', XDG_CACHE_HOME: '/x' });
    const fromXdg = defaultModelCacheDir({ XDG_CACHE_HOME: '/x' });
    const fromHome = defaultModelCacheDir({});

    expect(fromOwn).toBe('/c/models');
    expect(fromXdg).toBe('/x/safer-instruct/models');
    expect(fromHome).toMatch(/\.cache\/safer-instruct\/models$/);
  });

  it('reads the thread count from SAFER_INSTRUCT_LLAMA_THREADS, else half the cores up to 8', () => {
    const unset = [2, 3, 8, 32].map((cores) => llamaThreads({}, cores));
    const set = llamaThreads({ SAFER_INSTRUCT_LLAMA_THREADS: '2' });

    expect(unset).toEqual([1, 1, 4, 8]);
    expect(set).toBe(2);
    expect(() => llamaThreads({ SAFER_INSTRUCT_LLAMA_THREADS: 'many' })).toThrow(ModelConfigError);
  });

  it('rewrites schema keywords the grammar converter would misread', () => {
    const schema = z.object({
      score: z.number().int().min(1).max(5),
      note: z.string().nullable(),
      tags: z.array(z.string().max(8)).max(3),
      big: z.number().int().min(0).max(1000),
    });

    const converted = toGbnfJsonSchema(jsonSchemaOf(schema));

    expect(converted).toEqual({
      type: 'object',
      properties: {
        score: { enum: [1, 2, 3, 4, 5] },
        note: { type: ['string', 'null'] },
        tags: { type: 'array', items: { type: 'string', maxLength: 8 }, maxItems: 3 },
        big: { type: 'integer' },
      },
    });
  });
});
