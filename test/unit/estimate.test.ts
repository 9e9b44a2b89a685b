import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  AccessDeniedException,
  BedrockRuntimeClient,
  CountTokensCommand,
} from '@aws-sdk/client-bedrock-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { estimateCommand } from '../../lib/cli/estimate-command.js';
import { parseConfig } from '../../lib/pipeline/config.js';
import { InputError } from '../../lib/pipeline/errors.js';
import {
  bedrockTokenCounter,
  charsOver4,
  DEFAULT_ASSUMPTIONS,
  estimateRun,
  outputTokensOf,
  pricedModelId,
  standIn,
  type TokenCounter,
} from '../../lib/pipeline/estimate.js';
import { batchPriceOf, costOf, priceOf } from '../../lib/pipeline/ledger.js';
import type { GenerateRequest, JudgeRequest } from '../../lib/pipeline/models/model-client.js';
import { captured } from '../support/cli.js';
import { tempDir } from '../support/temp.js';

const HAIKU = 'anthropic.claude-3-haiku-20240307-v1:0';
const MODELS = {
  induce: `bedrock:${HAIKU}`,
  filter: `bedrock:${HAIKU}`,
  respond: 'bedrock:us.anthropic.claude-3-5-sonnet-20241022-v2:0',
  evaluate: `bedrock:${HAIKU}`,
};

/** Writes JSON Lines of `n` distinct records (and any extra lines) to a temporary file. */
function inputOf(n: number, extra: string[] = []): string {
  const path = join(tempDir(), 'input.jsonl');
  const lines = Array.from({ length: n }, (_, i) =>
    JSON.stringify({ id: `r${i}`, text: `Record ${i} says the people of street ${i * 7} are all thieves.` }),
  );
  writeFileSync(path, `${[...lines, ...extra].join('\n')}\n`);
  return path;
}

/** A counter that gives every request the same count and remembers what it was asked. */
function fixedCounter(tokens: number) {
  const asked: { spec: string; request: GenerateRequest | JudgeRequest<unknown> }[] = [];
  const counter: TokenCounter = {
    count: async (spec, request) => {
      asked.push({ spec, request });
      return { tokens, method: 'chars/4' };
    },
  };
  return { counter, asked };
}

describe('estimateRun', () => {
  it('counts one call per record split keeps in every model stage, and split rejects as rejects', async () => {
    // Prepare
    const path = inputOf(5, ['{"id": "r0", "text": "a duplicate id"}', '{"text": ""}', 'not json']);

    // Act
    const estimate = await estimateRun(path, parseConfig({ models: MODELS }), { counter: charsOver4 });

    // Assess
    expect(estimate.records).toEqual({ read: 8, kept: 5, rejected: 3 });
    expect(estimate.stages.map((s) => [s.stage, s.calls])).toEqual([
      ['induce', 5],
      ['filter', 5],
      ['respond', 5],
      ['evaluate', 5],
    ]);
    expect(estimate.totals.calls).toBe(20);
  });

  it('scales what an even sample counted up to every record, and prices it on-demand and in batch', async () => {
    // Prepare
    const path = inputOf(1000);
    const config = parseConfig({ models: MODELS });
    const { counter, asked } = fixedCounter(100);

    // Act
    const estimate = await estimateRun(path, config, { counter, sample: 50 });

    // Assess
    expect(estimate.sampled).toBe(50);
    // Every record in 20, from the first: an even spread.
    const induced = asked
      .filter((a) => a.request.prompt.includes('<response>Record'))
      .map((a) => a.request.prompt);
    expect(induced).toHaveLength(50);
    expect(induced[1]).toContain('<response>Record 20 says');
    for (const stage of estimate.stages) {
      const modelId = pricedModelId(stage.model);
      const usage = {
        inputTokens: 100 * 1000,
        outputTokens: 1000 * outputTokensOf(stage.stage, config, DEFAULT_ASSUMPTIONS),
      };
      expect(stage.inputTokens).toBe(100_000);
      expect(stage.outputTokens).toBe(usage.outputTokens);
      expect(stage.onDemandUsd).toBeCloseTo(costOf(usage, priceOf(modelId, config)), 12);
      expect(stage.batchUsd).toBeCloseTo(costOf(usage, batchPriceOf(modelId, config)), 12);
    }
    const sum = estimate.stages.reduce((n, s) => n + s.onDemandUsd, 0);
    expect(estimate.totals.onDemandUsd).toBeCloseTo(sum, 12);
    expect(estimate.totals.batchUsd).toBeCloseTo(sum / 2, 12);
    expect(estimate.perRecord.onDemandUsd).toBeCloseTo(sum / 1000, 12);
  });

  it('renders the real templates with each text, and stand-ins of the assumed lengths for what models write', async () => {
    // Prepare
    const path = inputOf(3);
    const config = parseConfig({ models: MODELS });
    const { counter, asked } = fixedCounter(1);
    const response = standIn(
      Math.round(config.stages.respond.maxTokens * DEFAULT_ASSUMPTIONS.responseCharsPerMaxToken),
    );
    const instruction = standIn(DEFAULT_ASSUMPTIONS.instructionChars);

    // Act
    await estimateRun(path, config, { counter });

    // Assess
    const prompts = (spec: string, tool?: string) =>
      asked
        .filter(
          (a) =>
            a.spec === spec &&
            (tool === undefined
              ? !('toolName' in a.request)
              : (a.request as JudgeRequest<unknown>).toolName === tool),
        )
        .map((a) => a.request.prompt);
    const induce = prompts(MODELS.induce);
    expect(induce).toHaveLength(3);
    expect(induce[0]).toContain('<response>Record 0 says the people of street 0 are all thieves.</response>');
    const filter = prompts(MODELS.filter, 'rate_instruction');
    expect(filter[2]).toContain(`<instruction>${instruction}</instruction>`);
    expect(filter[2]).toContain('<text>Record 2 says');
    // Every respond prompt is the same stand-in instruction: counted once.
    expect(prompts(MODELS.respond)).toEqual([`<request>${instruction}</request>`]);
    const evaluate = prompts(MODELS.evaluate, 'record_preference');
    expect(evaluate).toHaveLength(3);
    for (const prompt of evaluate) {
      expect(prompt).toContain(response);
      expect(prompt).toMatch(/<response_[ab]>Record \d says/);
    }
  });

  it('expects the assumed output of each stage, never more than its maxTokens', () => {
    // Prepare
    const config = parseConfig({ stages: { filter: { maxTokens: 16 }, respond: { maxTokens: 1000 } } });

    // Act
    const outputs = (['induce', 'filter', 'respond', 'evaluate'] as const).map((stage) =>
      outputTokensOf(stage, config, DEFAULT_ASSUMPTIONS),
    );

    // Assess
    // 96 characters; filter capped at 16; 1000 x 0.5 = 500 characters; the evaluate verdict.
    expect(outputs).toEqual([24, 16, 125, 48]);
  });

  it('holds at most the sample of a large input', async () => {
    // Prepare
    const path = inputOf(20_000);
    const { counter, asked } = fixedCounter(1);

    // Act
    const estimate = await estimateRun(path, parseConfig({ models: MODELS }), { counter, sample: 100 });

    // Assess
    expect(estimate.records.kept).toBe(20_000);
    expect(estimate.sampled).toBeLessThanOrEqual(100);
    expect(asked.filter((a) => a.request.prompt.includes('<response>Record')).length).toBe(estimate.sampled);
    expect(estimate.stages[0]?.inputTokens).toBe(20_000);
  });

  it('fails with an InputError for a file that is not there', async () => {
    await expect(
      estimateRun(join(tempDir(), 'missing.jsonl'), parseConfig({}), { counter: charsOver4 }),
    ).rejects.toThrow(InputError);
  });
});

describe('charsOver4', () => {
  it('counts the system prompt and the prompt at four characters a token, rounded up', async () => {
    const request = { system: 'abc', prompt: 'defgh', maxTokens: 1, temperature: 0 };
    expect(await charsOver4.count('llama:x', request)).toEqual({ tokens: 2, method: 'chars/4' });
  });
});

describe('bedrockTokenCounter', () => {
  const runtime = mockClient(BedrockRuntimeClient);
  afterEach(() => runtime.reset());
  const request = { system: 'You judge.', prompt: 'Judge this text.', maxTokens: 10, temperature: 0 };

  it('asks CountTokens for the foundation model, with the request as Converse sends it', async () => {
    // Prepare
    runtime.on(CountTokensCommand).resolves({ inputTokens: 123 });
    const counter = bedrockTokenCounter({ client: new BedrockRuntimeClient({ region: 'us-east-1' }) });

    // Act
    const count = await counter.count(`bedrock:us.${HAIKU}`, request);

    // Assess
    expect(count).toEqual({ tokens: 123, method: 'count-tokens' });
    const sent = runtime.commandCalls(CountTokensCommand)[0]?.args[0].input;
    expect(sent?.modelId).toBe(HAIKU);
    expect(sent?.input?.converse).toEqual({
      system: [{ text: 'You judge.' }],
      messages: [{ role: 'user', content: [{ text: 'Judge this text.' }] }],
    });
  });

  it('falls back to characters / 4 on AccessDenied, and asks no more for that model', async () => {
    // Prepare
    runtime
      .on(CountTokensCommand)
      .rejects(new AccessDeniedException({ message: 'not authorized', $metadata: { httpStatusCode: 403 } }));
    const told: string[] = [];
    const counter = bedrockTokenCounter({
      client: new BedrockRuntimeClient({ region: 'us-east-1' }),
      onFallback: (spec, error) => told.push(`${spec}: ${(error as Error).name}`),
    });

    // Act
    const first = await counter.count(`bedrock:${HAIKU}`, request);
    const second = await counter.count(`bedrock:${HAIKU}`, request);

    // Assess
    const expected = await charsOver4.count(`bedrock:${HAIKU}`, request);
    expect(first).toEqual(expected);
    expect(second).toEqual(expected);
    expect(runtime.commandCalls(CountTokensCommand)).toHaveLength(1);
    expect(told).toEqual([`bedrock:${HAIKU}: AccessDeniedException`]);
  });

  it('counts other providers with the fallback, without asking Bedrock', async () => {
    // Prepare
    const counter = bedrockTokenCounter({ client: new BedrockRuntimeClient({ region: 'us-east-1' }) });

    // Act
    const count = await counter.count('openai:http://localhost:8000/v1#qwen', request);

    // Assess
    expect(count.method).toBe('chars/4');
    expect(runtime.commandCalls(CountTokensCommand)).toHaveLength(0);
  });

  it('sends a judge request with its tool configuration', async () => {
    // Prepare
    runtime.on(CountTokensCommand).resolves({ inputTokens: 200 });
    const counter = bedrockTokenCounter({ client: new BedrockRuntimeClient({ region: 'us-east-1' }) });
    const { FilterVerdict } = await import('../../lib/pipeline/stages/filter.js');
    const judge = {
      ...request,
      schema: FilterVerdict,
      toolName: 'rate_instruction',
      toolDescription: 'Rate it.',
    };

    // Act
    await counter.count(`bedrock:${HAIKU}`, judge);

    // Assess
    const sent = runtime.commandCalls(CountTokensCommand)[0]?.args[0].input;
    expect(sent?.input?.converse?.toolConfig?.tools?.[0]?.toolSpec?.name).toBe('rate_instruction');
  });
});

describe('safer-instruct estimate', () => {
  it('prints each stage and the totals, and nothing is paid', async () => {
    // Act
    const { code, out } = await captured(estimateCommand, [inputOf(4), '--model', 'llama:model.gguf']);

    // Assess
    expect(code).toBe(0);
    for (const stage of ['induce', 'filter', 'respond', 'evaluate', 'total'])
      expect(out).toMatch(new RegExp(`^${stage} `, 'm'));
    expect(out).toContain('4 kept by split');
    expect(out).toContain('nothing was paid');
  });

  it('prints one JSON document with --json, taking the models and sample from its flags', async () => {
    // Act
    const { code, out } = await captured(estimateCommand, [
      inputOf(30),
      '--model',
      `bedrock:${HAIKU}`,
      '--no-count-tokens',
      '--sample',
      '10',
      '--json',
    ]);

    // Assess
    expect(code).toBe(0);
    const estimate = JSON.parse(out);
    expect(estimate.sampled).toBe(10);
    expect(estimate.stages.map((s: { model: string }) => s.model)).toEqual(Array(4).fill(`bedrock:${HAIKU}`));
    expect(estimate.totals.onDemandUsd).toBeGreaterThan(0);
  });

  it('is a usage error without an input, or with a sample that is not a count', async () => {
    expect((await captured(estimateCommand, [])).code).toBe(2);
    const bad = await captured(estimateCommand, [inputOf(1), '--sample', 'some']);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('--sample');
  });

  it('fails with 1 for an input that is not there', async () => {
    const { code, err } = await captured(estimateCommand, [join(tempDir(), 'missing.jsonl')]);
    expect(code).toBe(1);
    expect(err).toContain('no such file');
  });
});
