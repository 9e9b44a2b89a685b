import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ConfigError } from './errors.js';
import { InductionExample } from './prompts/induction.js';

/**
 * A model, named by provider: `bedrock:<modelId, inference profile or ARN>` (Converse),
 * `bedrock-custom:<modelId or ARN>[#llama|titan|cohere|mistral|completion]` (InvokeModel with the raw
 * prompt, for custom and imported models), `sagemaker:<endpoint>[#tgi|messages]`,
 * `openai:<baseURL>#<model>`, `llama:<path.gguf | hf:URI>`, or `ssm:<parameter name>`: the spec an SSM
 * parameter holds (the tuned model ReverseTuning records), read when a run starts.
 */
export const ModelSpec = z
  .string()
  .regex(
    /^(bedrock|bedrock-custom|sagemaker|openai|llama|ssm):.+/,
    'a model spec is bedrock:<id>, bedrock-custom:<arn>[#body], sagemaker:<endpoint>[#payload], ' +
      'openai:<baseURL>#<model>, llama:<path|hf:URI> or ssm:<parameter>',
  );
export type ModelSpec = z.infer<typeof ModelSpec>;

/** The local default: a small, permissively licensed (Apache-2.0) instruct model, fetched on first use. */
export const DEFAULT_LOCAL_MODEL =
  'llama:hf:Qwen/Qwen2.5-1.5B-Instruct-GGUF/qwen2.5-1.5b-instruct-q4_k_m.gguf';

const Template = z.strictObject({ system: z.string().min(1), user: z.string().min(1) });

/** A generation stage's settings, each with its stage's default. */
const generationSettings = (maxTokens: number, temperature: number) =>
  z.strictObject({
    maxTokens: z.number().int().min(1).max(8192).default(maxTokens),
    temperature: z.number().min(0).max(2).default(temperature),
    /** Replaces the stage's built-in prompt template. */
    template: Template.optional(),
  });

/** A judging stage's settings: what it checks, in plain words, and the 1-5 score that keeps a record. */
const judgeSettings = (maxTokens: number, criteria: string, threshold: number) =>
  generationSettings(maxTokens, 0).extend({
    criteria: z.string().min(1).default(criteria),
    threshold: z.number().int().min(1).max(5).default(threshold),
  });

const DEFAULT_FILTER_CRITERIA =
  'Keep the instruction only if it is a coherent, self-contained request and the text is a plausible, ' +
  'on-target answer to it: carrying out the instruction would produce that text. Drop fragments, ' +
  'gibberish, and instructions about something other than the text.';
const DEFAULT_EVALUATE_CRITERIA =
  'The preferred response is safe and helpful: it declines any harmful part of the instruction, says why ' +
  'in a sentence, and offers a safe, useful alternative where one exists. It must not carry out the harmful ' +
  'request, repeat or summarize harmful content, or be empty, one word, or off-topic.';

/** Shortest and longest text a field may hold, in characters after normalization. */
const lengthBounds = (min: number, max: number) =>
  z
    .strictObject({
      min: z.number().int().min(0).default(min),
      max: z.number().int().positive().default(max),
    })
    .refine((b) => b.min <= b.max, 'min must not exceed max')
    .prefault({});

/**
 * The data-quality rules: near-duplicate detection, length bounds per field, and how many pairs
 * may share a near-identical chosen response. The audit command applies the same rules.
 */
export const QualityConfig = z.strictObject({
  /** Texts whose shingle sets have at least this Jaccard similarity are near-duplicates (MinHash + LSH). */
  nearDuplicateThreshold: z.number().gt(0).max(1).default(0.8),
  /** Hash functions per MinHash signature: more is more exact and slower. */
  minhashPermutations: z.number().int().min(16).max(512).default(128),
  /** Characters per shingle. */
  shingleSize: z.number().int().min(1).max(16).default(5),
  lengths: z
    .strictObject({
      instruction: lengthBounds(10, 2000),
      chosen: lengthBounds(20, 8000),
      /** The input text: split rejects texts outside these bounds before any model sees them. */
      rejected: lengthBounds(1, 20_000),
    })
    .prefault({}),
  /**
   * At most this many pairs share one near-identical chosen response; the rest, lowest evaluate score
   * first, are rejected. A stock refusal repeated thousands of times teaches over-refusal.
   */
  maxNearIdenticalChosen: z.number().int().min(1).default(5),
  /** Respond rejects a chosen response that is only a canned refusal ("Sorry, but I can't assist with that."). */
  rejectStockRefusals: z.boolean().default(true),
});
export type QualityConfig = z.infer<typeof QualityConfig>;

/**
 * Reversed instruction tuning (the ReverseTuning state machine): the base model Bedrock fine-tunes on
 * reversed data, its hyperparameters, and how the tuned model is served for induction.
 */
export const TuningConfig = z.strictObject({
  /** A Bedrock base model that can be fine-tuned; its id decides the training data format. */
  baseModel: z.string().min(1).default('amazon.nova-micro-v1:0:128k'),
  /** Passed to CreateModelCustomizationJob as strings, e.g. `{"epochCount": 2}`; absent keys keep Bedrock's defaults. */
  hyperParameters: z.record(z.string(), z.union([z.string(), z.number()]).transform(String)).default({}),
  /**
   * How the tuned model is made invokable. `deployment`: an on-demand custom model deployment, billed per
   * token (Nova models); `provisioned`: Provisioned Throughput, billed per model unit per HOUR whether
   * used or not; `none`: record the custom model only. `auto`: deployment for Nova, none otherwise.
   */
  serving: z.enum(['auto', 'none', 'deployment', 'provisioned']).default('auto'),
  /** Model units of Provisioned Throughput, when serving is `provisioned`. */
  modelUnits: z.number().int().min(1).max(20).default(1),
  /** The SSM parameter the tuned model's spec is written to; default `/<stack name>/induce-model`. */
  parameterName: z
    .string()
    .regex(/^\/[\w.\-/]{1,1000}$/, 'an SSM parameter name: /path/name of letters, digits, . - _')
    .optional(),
});
export type TuningConfig = z.infer<typeof TuningConfig>;

/** The modes model calls run in: one request each, Bedrock batch jobs, or batch where a stage is large enough. */
export const RUN_MODES = ['on-demand', 'batch', 'auto'] as const;

/**
 * Bedrock batch inference (modes `batch` and `auto`): a model stage's calls go out as batch jobs at about
 * half the on-demand price; what a job cannot answer is paid on-demand. The job bounds are the model's
 * quotas in Service Quotas.
 */
export const BatchConfig = z
  .strictObject({
    /** The fewest records Bedrock takes in one job (a quota per model, commonly 100). */
    minRecordsPerJob: z.number().int().min(1).default(100),
    /** The most records in one job (a quota per model, about 50,000). */
    maxRecordsPerJob: z.number().int().min(1).max(1_000_000).default(50_000),
    /** Batch jobs of one stage submitted or running at once (the per-model quota of jobs in flight). */
    maxJobs: z.number().int().min(1).max(40).default(10),
    /**
     * Mode `auto` batches a stage only when it has at least this many calls to make: below it the hours
     * a job can wait are not worth the savings.
     */
    autoMinRecords: z.number().int().min(1).default(1000),
    /** Batch prices as a fraction of on-demand ones, for models whose `prices` entry gives no batch price. */
    priceFactor: z.number().gt(0).max(1).default(0.5),
    /** Hours Bedrock lets a job wait and run before it expires (24-168). */
    timeoutHours: z.number().int().min(24).max(168).default(24),
  })
  .refine(
    (b) => b.minRecordsPerJob <= b.maxRecordsPerJob,
    'minRecordsPerJob must not exceed maxRecordsPerJob',
  );
export type BatchConfig = z.infer<typeof BatchConfig>;

/** A Standard execution holds 25,000 events; a shard costs about 32 in the batch workflow. */
export const BATCH_MAX_SHARDS = 600;

/** The pipeline configuration: models, limits and prompts. Criteria and prompts are data. */
export const PipelineConfig = z
  .strictObject({
    models: z
      .strictObject({ induce: ModelSpec, filter: ModelSpec, respond: ModelSpec, evaluate: ModelSpec })
      .default({
        induce: DEFAULT_LOCAL_MODEL,
        filter: DEFAULT_LOCAL_MODEL,
        respond: DEFAULT_LOCAL_MODEL,
        evaluate: DEFAULT_LOCAL_MODEL,
      }),
    input: z
      .strictObject({
        format: z.enum(['auto', 'jsonl', 'csv']).default('auto'),
        textField: z.string().min(1).default('text'),
        idField: z.string().min(1).default('id'),
        categoryField: z.string().min(1).default('category'),
        /** Longer input lines are rejected as line-too-long without being held in memory. */
        maxLineBytes: z.number().int().min(1024).default(1_048_576),
      })
      .prefault({}),
    quality: QualityConfig.prefault({}),
    tuning: TuningConfig.prefault({}),
    /**
     * `on-demand`: every model call is a request of its own. `batch`: each model stage first sends its
     * calls as Bedrock batch jobs (at about half the price, within hours), then pays on-demand for what the
     * jobs left out. `auto`: batch for a stage with at least `batch.autoMinRecords` calls, on-demand below.
     */
    mode: z.enum(RUN_MODES).default('on-demand'),
    batch: BatchConfig.prefault({}),
    /** Records per shard; raised automatically so a run has at most `maxShards` shards. */
    shardSize: z.number().int().min(1).max(100_000).default(50),
    /**
     * A Standard execution holds at most 25,000 history events, and each shard of the two inline Maps
     * costs about 24 (four tasks of five, plus two iterations) before retries: 800 shards leave room.
     */
    maxShards: z.number().int().min(1).max(800).default(500),
    /** Shards processed at once (the Map's MaxConcurrency). */
    concurrency: z.number().int().min(1).max(40).default(4),
    /** Model calls in flight at once within one shard. */
    callConcurrency: z.number().int().min(1).max(64).default(4),
    stages: z
      .strictObject({
        induce: generationSettings(128, 0.2)
          .extend({
            /**
             * `tuned`: the reversed training prompt, for a model tuned by ReverseTuning; `few-shot`: reversed
             * examples for a general model; `auto`: tuned for custom, imported and SageMaker models.
             */
            prompt: z.enum(['auto', 'tuned', 'few-shot']).default('auto'),
            /** The few-shot examples, e.g. drawn from `reverse-data` output with `run --few-shot`. */
            examples: z.array(InductionExample).max(16).optional(),
          })
          .prefault({}),
        filter: judgeSettings(256, DEFAULT_FILTER_CRITERIA, 3).prefault({}),
        respond: generationSettings(512, 0.7).prefault({}),
        evaluate: judgeSettings(256, DEFAULT_EVALUATE_CRITERIA, 4).prefault({}),
      })
      .prefault({}),
    /**
     * The account's on-demand quota per model spec, shared by every process of a run: each Lambda
     * takes 1/`concurrency` of it. Concurrency adapts below `maxConcurrency` when the service throttles.
     */
    limits: z
      .record(
        ModelSpec,
        z.strictObject({
          requestsPerMinute: z.number().positive().optional(),
          tokensPerMinute: z.number().positive().optional(),
          maxConcurrency: z.number().int().min(1).max(256).optional(),
        }),
      )
      .default({}),
    /**
     * Retries of a throttled or failed call inside a stage, with full-jitter backoff; the Step Functions
     * Retry on the named error is the outer layer. The defaults wait about two minutes in all, longer
     * than a per-minute quota window.
     */
    retry: z
      .strictObject({
        attempts: z.number().int().min(1).max(30).default(10),
        transientAttempts: z.number().int().min(1).max(30).default(4),
        baseDelayMs: z.number().int().min(0).max(60_000).default(1000),
        maxDelayMs: z.number().int().min(0).max(600_000).default(60_000),
      })
      .prefault({}),
    /** USD per 1,000 tokens by model id; overrides and extends the built-in table. */
    prices: z
      .record(
        z.string(),
        z.strictObject({
          inputPer1k: z.number().nonnegative(),
          outputPer1k: z.number().nonnegative(),
          /** Batch prices; default the on-demand ones times `batch.priceFactor`. */
          batchInputPer1k: z.number().nonnegative().optional(),
          batchOutputPer1k: z.number().nonnegative().optional(),
        }),
      )
      .default({}),
  })
  .superRefine((config, ctx) => {
    // Three judge Maps instead of one and a batch chain per stage cost about 8 more history events a shard.
    if (config.mode !== 'on-demand' && config.maxShards > BATCH_MAX_SHARDS)
      ctx.addIssue({
        code: 'custom',
        path: ['maxShards'],
        message: `at most ${BATCH_MAX_SHARDS} in mode ${config.mode}: its workflow has more steps per shard`,
      });
    for (const [spec, limit] of Object.entries(config.limits))
      if (limit.maxConcurrency !== undefined && limit.maxConcurrency < config.concurrency)
        ctx.addIssue({
          code: 'custom',
          path: ['limits', spec, 'maxConcurrency'],
          message:
            `${limit.maxConcurrency} is below concurrency ${config.concurrency}: each shard in flight needs a ` +
            'call slot of its own; lower concurrency',
        });
  });
export type PipelineConfig = z.infer<typeof PipelineConfig>;
/** A configuration as a user writes it: every field optional. */
export type PipelineConfigInput = z.input<typeof PipelineConfig>;

/** Keys of earlier versions, and where their setting lives now. */
const MOVED_KEYS: Readonly<Record<string, string>> = {
  'input.maxTextChars': 'quality.lengths.rejected.max',
};

/** Parses a configuration, or throws a ConfigError whose one line names each problem; unknown keys are problems. */
export function parseConfig(raw: unknown, origin = 'config'): PipelineConfig {
  const parsed = PipelineConfig.safeParse(raw);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => {
    const keys = i.code === 'unrecognized_keys' ? i.keys : [];
    const moved = keys.flatMap((k) => {
      const to = MOVED_KEYS[[...i.path, k].join('.')];
      return to ? [`${k} is now ${to}`] : [];
    });
    return `${i.path.join('.') || '(root)'}: ${i.message}${moved.length ? ` (${moved.join('; ')})` : ''}`;
  });
  throw new ConfigError(`${origin}: ${problems.join('; ')}`);
}

/** Reads and validates a JSON configuration file. */
export async function loadConfigFile(path: string): Promise<PipelineConfigInput> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`config ${path} is not valid JSON: ${(error as Error).message}`);
  }
  parseConfig(raw, `config ${path}`);
  return raw as PipelineConfigInput;
}

/** The models a configuration uses, each once. */
export const modelsOf = (config: PipelineConfig): string[] => [...new Set(Object.values(config.models))];
