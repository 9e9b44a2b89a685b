import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import {
  type BedrockRuntimeClient,
  CountTokensCommand,
  type CountTokensCommandInput,
} from '@aws-sdk/client-bedrock-runtime';
import { type PipelineConfig, parseConfig } from './config.js';
import { InputError, ModelConfigError, StoreKeyMissingError } from './errors.js';
import { countLines } from './input.js';
import { configKey, INCOMING_PREFIX } from './keys.js';
import { batchPriceOf, costOf, priceOf } from './ledger.js';
import { mapLimit } from './models/calls.js';
import { converseBody } from './models/converse-body.js';
import type { GenerateRequest, JudgeRequest } from './models/model-client.js';
import { estimateTokens } from './models/raw-prompting.js';
import { parseModelSpec } from './models/registry.js';
import type { ParameterStore } from './parameters.js';
import { foundationModelOf, PRICE_TABLE, perPairUsd } from './prices.js';
import { inductionRequest } from './prompts/induction.js';
import { renderTemplate, templateFor } from './prompts/templates.js';
import { MODEL_STAGES, type ModelStage } from './schemas.js';
import { chosenFirst, EvaluateVerdict } from './stages/evaluate.js';
import { FilterVerdict } from './stages/filter.js';
import { split } from './stages/split.js';
import type { Store } from './store/store.js';

/** How a prompt's tokens were counted: by Bedrock CountTokens, or as characters / 4. */
export type TokenCountMethod = 'count-tokens' | 'chars/4';

/** A prompt's input tokens, and how they were counted. */
export interface TokenCount {
  readonly tokens: number;
  readonly method: TokenCountMethod;
}

/** Counts the input tokens of one request to the model of a spec. */
export interface TokenCounter {
  count(spec: string, request: GenerateRequest | JudgeRequest<unknown>): Promise<TokenCount>;
}

/**
 * About four characters a token, system prompt and prompt together: what the rest of the project
 * assumes where a provider reports no count (raw prompting, the rate governor, the fake model).
 */
export const charsOver4: TokenCounter = {
  count: async (_spec, request) => ({
    tokens: estimateTokens(request.system + request.prompt),
    method: 'chars/4',
  }),
};

/** Options of {@link bedrockTokenCounter}. */
export interface BedrockTokenCounterOptions {
  readonly client: BedrockRuntimeClient;
  /** Counts what CountTokens cannot. @default charsOver4 */
  readonly fallback?: TokenCounter;
  /** Told once per model when CountTokens fails for it (no credentials, no access, not supported). */
  readonly onFallback?: (spec: string, error: unknown) => void;
}

/**
 * Counts `bedrock:` prompts with Bedrock CountTokens (free, and the count Bedrock bills): the request as
 * Converse sends it, tool configuration included. Other providers, and a model whose first count fails
 * for any reason (no credentials, AccessDenied, a model CountTokens does not support), get the fallback.
 */
export function bedrockTokenCounter(options: BedrockTokenCounterOptions): TokenCounter {
  const { client, fallback = charsOver4, onFallback } = options;
  const failed = new Set<string>();
  return {
    async count(spec, request) {
      const modelId = spec.startsWith('bedrock:') ? spec.slice('bedrock:'.length) : undefined;
      if (modelId === undefined || failed.has(modelId)) return fallback.count(spec, request);
      const { system, messages, toolConfig } = converseBody(request);
      try {
        const { inputTokens } = await client.send(
          new CountTokensCommand({
            // An inference profile counts as the model it routes to.
            modelId: foundationModelOf(modelId),
            input: { converse: { system, messages, toolConfig } } as CountTokensCommandInput['input'],
          }),
        );
        if (typeof inputTokens !== 'number')
          throw new ModelConfigError('CountTokens answered without a count');
        return { tokens: inputTokens, method: 'count-tokens' };
      } catch (error) {
        if (!failed.has(modelId)) {
          failed.add(modelId);
          onFallback?.(spec, error);
        }
        return fallback.count(spec, request);
      }
    },
  };
}

/**
 * What the estimate assumes of what it cannot render or count before a run. Each is a per-call
 * expectation; judge retries (an invalid answer asked once more) are not counted.
 */
export interface EstimateAssumptions {
  /**
   * Characters of an induced instruction: one request of a sentence or two, which induce writes and
   * filter, respond and evaluate read. Also induce's output, at four characters a token.
   * @default 96
   */
  readonly instructionChars: number;
  /**
   * Characters of a chosen response per token of `stages.respond.maxTokens`: respond's output, and
   * one side of each evaluate prompt. The respond template asks for a refusal with a one-sentence reason
   * and a safe alternative, two to four sentences: 0.5 gives 256 characters (about 64 tokens) at the
   * default 512.
   * @default 0.5
   */
  readonly responseCharsPerMaxToken: number;
  /** Output tokens of a filter verdict: a one-sentence rationale and a score, as a tool call. @default 40 */
  readonly filterOutputTokens: number;
  /** Output tokens of an evaluate verdict: the preferred side, a rationale and a score. @default 48 */
  readonly evaluateOutputTokens: number;
}

export const DEFAULT_ASSUMPTIONS: EstimateAssumptions = {
  instructionChars: 96,
  responseCharsPerMaxToken: 0.5,
  filterOutputTokens: 40,
  evaluateOutputTokens: 48,
};

/** What an estimate needs from outside: how to count tokens, and how much of the input to render. */
export interface EstimateDeps {
  readonly counter: TokenCounter;
  /** Records whose prompts are rendered and counted, at most, spread evenly; the rest scale up. @default 2000 */
  readonly sample?: number;
  /** Token counts in flight at once. @default 8 */
  readonly concurrency?: number;
  readonly assumptions?: Partial<EstimateAssumptions>;
  /** Where `ssm:` model specs are read, as a run reads them; absent, such specs are an error. */
  readonly parameters?: ParameterStore;
}

/** Dollars at list prices, on-demand and in batch. */
export interface Cost {
  readonly onDemandUsd: number;
  readonly batchUsd: number;
}

/** One model stage's expected calls, tokens and cost. */
export interface StageEstimate extends Cost {
  readonly stage: ModelStage;
  readonly model: string;
  /** One call per record split keeps. */
  readonly calls: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** How the input tokens were counted; `mixed` when CountTokens failed part way. */
  readonly counted: TokenCountMethod | 'mixed';
}

/** What a run over an input is expected to call and cost. */
export interface RunEstimate {
  readonly input: string;
  /** Split's count: rows read, records kept, rows rejected. */
  readonly records: { readonly read: number; readonly kept: number; readonly rejected: number };
  /** Records whose prompts were rendered and counted; the totals are scaled up from them. */
  readonly sampled: number;
  readonly stages: readonly StageEstimate[];
  readonly totals: Cost & {
    readonly calls: number;
    readonly inputTokens: number;
    readonly outputTokens: number;
  };
  /** The cost per record kept: per pair, were every record to become one. Null with no records kept. */
  readonly perRecord: { readonly onDemandUsd: number | null; readonly batchUsd: number | null };
  readonly assumptions: EstimateAssumptions;
  readonly prices: { readonly version: string; readonly source: string };
}

/** A record as the estimate keeps it: enough to render its prompts. */
interface Sampled {
  readonly id: string;
  readonly text: string;
}

/**
 * Estimates what a run over the input would call and cost, paying for nothing:
 * - split runs as in a run (same reading, validation and id checks, streamed), over a store that keeps
 *   no shard: the records it keeps are counted, and at most `sample` of them, spread evenly, are kept;
 * - each model stage's real prompts are rendered from its templates for the sampled records, counted
 *   with `deps.counter`, and scaled up to every record split keeps;
 * - what only the model can write is taken from {@link EstimateAssumptions}: the instruction, the chosen
 *   response, the judges' verdicts; every record is assumed to reach every stage (dedup and rejections
 *   only lower the real figures).
 */
export async function estimateRun(
  inputPath: string,
  config: PipelineConfig,
  deps: EstimateDeps,
): Promise<RunEstimate> {
  const path = resolve(inputPath);
  if (!(await stat(path).catch(() => undefined))?.isFile())
    throw new InputError(`${inputPath}: no such file`);
  const assumptions = { ...DEFAULT_ASSUMPTIONS, ...deps.assumptions };
  const sampleSize = Math.max(1, deps.sample ?? 2000);
  const stride = Math.max(1, Math.ceil((await countLines(createReadStream(path))) / sampleSize));

  const sampled: Sampled[] = [];
  let kept = 0;
  const store = new SinkStore({ key: `${INCOMING_PREFIX}${basename(path)}`, path }, (jsonl) => {
    for (const line of jsonl.split('\n')) {
      if (!line) continue;
      if (kept++ % stride === 0) {
        const { id, text } = JSON.parse(line) as Sampled;
        sampled.push({ id, text });
      }
    }
  });
  const result = await split(
    { event: { inputKey: store.inputKey }, executionId: 'estimate', config },
    { store, models: NO_MODELS, parameters: deps.parameters },
  );
  // The configuration split froze: `ssm:` specs pinned to the models they name.
  const run = parseConfig(JSON.parse(await store.get(configKey(result.runId))), 'the estimated run config');

  const requests = stageRequests(run, assumptions);
  const scale = sampled.length === 0 ? 0 : kept / sampled.length;
  const stages: StageEstimate[] = [];
  for (const stage of MODEL_STAGES) {
    const spec = run.models[stage];
    const counts = await countAll(
      deps.counter,
      spec,
      sampled.map((record) => requests[stage](record)),
      deps.concurrency ?? 8,
    );
    const methods = new Set(counts.map((c) => c.method));
    const inputTokens = Math.round(counts.reduce((n, c) => n + c.tokens, 0) * scale);
    const outputTokens = kept * outputTokensOf(stage, run, assumptions);
    const modelId = pricedModelId(spec);
    const usage = { inputTokens, outputTokens };
    stages.push({
      stage,
      model: spec,
      calls: kept,
      inputTokens,
      outputTokens,
      onDemandUsd: costOf(usage, priceOf(modelId, run)),
      batchUsd: costOf(usage, batchPriceOf(modelId, run)),
      counted: methods.size > 1 ? 'mixed' : ([...methods][0] ?? 'chars/4'),
    });
  }
  const sum = (pick: (s: StageEstimate) => number) => stages.reduce((n, s) => n + pick(s), 0);
  const totals = {
    calls: sum((s) => s.calls),
    inputTokens: sum((s) => s.inputTokens),
    outputTokens: sum((s) => s.outputTokens),
    onDemandUsd: sum((s) => s.onDemandUsd),
    batchUsd: sum((s) => s.batchUsd),
  };
  return {
    input: inputPath,
    records: { read: result.records, kept, rejected: result.records - kept },
    sampled: sampled.length,
    stages,
    totals,
    perRecord: {
      onDemandUsd: perPairUsd(totals.onDemandUsd, kept),
      batchUsd: perPairUsd(totals.batchUsd, kept),
    },
    assumptions,
    prices: { version: PRICE_TABLE.version, source: PRICE_TABLE.source },
  };
}

/** Output tokens one call of a stage is expected to write (text at four characters a token), at most its `maxTokens`. */
export function outputTokensOf(
  stage: ModelStage,
  config: Pick<PipelineConfig, 'stages'>,
  assumptions: EstimateAssumptions,
): number {
  const expected = {
    induce: Math.ceil(assumptions.instructionChars / 4),
    filter: assumptions.filterOutputTokens,
    respond: Math.ceil(responseChars(config, assumptions) / 4),
    evaluate: assumptions.evaluateOutputTokens,
  }[stage];
  return Math.min(expected, config.stages[stage].maxTokens);
}

const responseChars = (config: Pick<PipelineConfig, 'stages'>, assumptions: EstimateAssumptions) =>
  Math.round(config.stages.respond.maxTokens * assumptions.responseCharsPerMaxToken);

// Ordinary words, so that a tokenizer counts a stand-in about as it would count real text.
const FILLER =
  'Please help me write a short and friendly note to the people on my street about the noise at night, ' +
  'and say what we could all do differently so that everyone gets some rest. ';

/** Ordinary text of exactly `length` characters, standing in for what a model would have written. */
export function standIn(length: number): string {
  return FILLER.repeat(Math.ceil(length / FILLER.length)).slice(0, length);
}

/**
 * The request each stage sends for a record, rendered from the run's own templates as the stage renders
 * them, with stand-ins of the assumed lengths for the instruction and the chosen response.
 */
function stageRequests(
  config: PipelineConfig,
  assumptions: EstimateAssumptions,
): Record<ModelStage, (record: Sampled) => GenerateRequest | JudgeRequest<unknown>> {
  const { induce, filter, respond, evaluate } = config.stages;
  const instruction = standIn(assumptions.instructionChars);
  const response = standIn(responseChars(config, assumptions));
  const templates = {
    filter: templateFor('filter', filter.template),
    respond: templateFor('respond', respond.template),
    evaluate: templateFor('evaluate', evaluate.template),
  };
  // The tool names and descriptions are the stages' own (filter.ts, evaluate.ts).
  return {
    induce: (record) => inductionRequest(record.text, induce, config.models.induce).request,
    filter: (record) => ({
      system: templates.filter.system,
      prompt: renderTemplate(templates.filter.user, {
        criteria: filter.criteria,
        instruction,
        text: record.text,
      }),
      maxTokens: filter.maxTokens,
      temperature: filter.temperature,
      schema: FilterVerdict,
      toolName: 'rate_instruction',
      toolDescription: 'Record the rubric score and rationale for the instruction.',
    }),
    respond: () => ({
      system: templates.respond.system,
      prompt: renderTemplate(templates.respond.user, { instruction }),
      maxTokens: respond.maxTokens,
      temperature: respond.temperature,
    }),
    evaluate: (record) => {
      const [a, b] = chosenFirst(record.id) ? [response, record.text] : [record.text, response];
      return {
        system: templates.evaluate.system,
        prompt: renderTemplate(templates.evaluate.user, {
          criteria: evaluate.criteria,
          instruction,
          a,
          b,
        }),
        maxTokens: evaluate.maxTokens,
        temperature: evaluate.temperature,
        schema: EvaluateVerdict,
        toolName: 'record_preference',
        toolDescription: 'Record which response is preferred, the rationale and the rubric score.',
      };
    },
  };
}

/** Counts each request once: equal prompts (every respond prompt is the same stand-in) are asked about once. */
async function countAll(
  counter: TokenCounter,
  spec: string,
  requests: readonly (GenerateRequest | JudgeRequest<unknown>)[],
  concurrency: number,
): Promise<TokenCount[]> {
  const seen = new Map<string, Promise<TokenCount>>();
  return mapLimit(requests, concurrency, (request) => {
    const key = createHash('sha256').update(request.system).update('\0').update(request.prompt).digest('hex');
    let count = seen.get(key);
    if (!count) {
      count = counter.count(spec, request);
      seen.set(key, count);
    }
    return count;
  });
}

/** The model id a spec's calls are priced under: what its client reports as `modelId`. */
export function pricedModelId(spec: string): string {
  const parsed = parseModelSpec(spec);
  switch (parsed.provider) {
    case 'bedrock':
    case 'bedrock-custom':
      return parsed.modelId;
    case 'sagemaker':
      return `sagemaker:${parsed.endpoint}`;
    case 'openai':
      return parsed.model;
    case 'llama':
      return parsed.source;
    default:
      return spec;
  }
}

/** Split needs no model; an estimate calls none. */
const NO_MODELS = {
  get: async (spec: string): Promise<never> => {
    throw new ModelConfigError(`an estimate calls no model (asked for ${spec})`);
  },
};

const SPLIT_SHARD = /\/shards\/[^/]+\/split\.jsonl$/;

/**
 * The store an estimate runs split over: the input file under `inputKey`, each shard split writes
 * handed to `onShard` and dropped, the rejects streamed through and dropped, and the few small objects
 * split writes besides (marker, config, manifest, stats) kept in memory.
 */
class SinkStore implements Store {
  readonly inputKey: string;
  readonly #path: string;
  readonly #onShard: (jsonl: string) => void;
  readonly #objects = new Map<string, string>();

  constructor(input: { key: string; path: string }, onShard: (jsonl: string) => void) {
    this.inputKey = input.key;
    this.#path = input.path;
    this.#onShard = onShard;
  }

  async get(key: string): Promise<string> {
    const text = this.#objects.get(key);
    if (text === undefined) throw new StoreKeyMissingError(`no object at ${key}`);
    return text;
  }

  async tryGet(key: string): Promise<string | undefined> {
    return this.#objects.get(key);
  }

  async getStream(key: string) {
    if (key !== this.inputKey) throw new StoreKeyMissingError(`no object at ${key}`);
    return createReadStream(this.#path);
  }

  async put(key: string, body: string | Uint8Array): Promise<void> {
    const text = typeof body === 'string' ? body : Buffer.from(body).toString('utf8');
    if (SPLIT_SHARD.test(key)) this.#onShard(text);
    else this.#objects.set(key, text);
  }

  async putStream(_key: string, body: AsyncIterable<string | Uint8Array>): Promise<void> {
    for await (const _chunk of body);
  }

  async putIfAbsent(key: string, body: string): Promise<boolean> {
    if (this.#objects.has(key)) return false;
    this.#objects.set(key, body);
    return true;
  }

  async head(key: string): Promise<{ size: number; etag: string } | undefined> {
    if (key === this.inputKey) {
      const info = await stat(this.#path);
      return { size: info.size, etag: `${info.size}-${info.mtimeMs}` };
    }
    const text = this.#objects.get(key);
    return text === undefined ? undefined : { size: Buffer.byteLength(text), etag: '' };
  }
}
