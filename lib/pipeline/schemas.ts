import { z } from 'zod';

/** The model stages, in pipeline order. */
export const MODEL_STAGES = ['induce', 'filter', 'respond', 'evaluate'] as const;
/** The global dedup passes: texts before induce, instructions after it. */
export const DEDUP_STAGES = ['dedup-texts', 'dedup-instructions'] as const;
/**
 * The stages that write a per-shard output, in pipeline order: each takes in exactly the records the
 * previous one kept (split's shards first) and sends each one on or to the rejects.
 */
export const SHARD_STAGES = [
  'dedup-texts',
  'induce',
  'dedup-instructions',
  'filter',
  'respond',
  'evaluate',
] as const;
/** Every stage that can reject a record, in pipeline order; merge caps near-identical chosen responses. */
export const STAGES = ['split', ...SHARD_STAGES, 'merge'] as const;

export const ModelStage = z.enum(MODEL_STAGES);
export type ModelStage = z.infer<typeof ModelStage>;
export const StageName = z.enum(STAGES);
export type StageName = z.infer<typeof StageName>;
export const ShardStage = z.enum(SHARD_STAGES);
export type ShardStage = z.infer<typeof ShardStage>;

/** The stage whose output a shard stage reads. */
export const inputStageOf = (stage: ShardStage): StageName =>
  stage === 'dedup-texts' ? 'split' : (SHARD_STAGES[SHARD_STAGES.indexOf(stage) - 1] as ShardStage);

/** What a stage recorded about how it treated a record: model, template hash, judge score. */
export const StageTrace = z.object({
  model: z.string(),
  template: z.string(),
  score: z.number().int().min(1).max(5).optional(),
  rationale: z.string().optional(),
  /** The order the evaluator saw the two responses in, drawn per record against position bias. */
  order: z.enum(['chosen-first', 'rejected-first']).optional(),
});
export type StageTrace = z.infer<typeof StageTrace>;

/** A validated input record as `split` writes it into a shard. */
export const InputRecord = z.object({
  id: z.string().min(1),
  text: z.string().min(1),
  category: z.string().nullable(),
  source: z.string(),
  line: z.number().int().positive(),
  meta: z.record(z.string(), z.unknown()),
  trace: z.record(z.string(), StageTrace).default({}),
});
export type InputRecord = z.infer<typeof InputRecord>;

/** A record after `induce`: the text now has the instruction it answers. */
export const InducedRecord = InputRecord.extend({ instruction: z.string().min(1) });
export type InducedRecord = z.infer<typeof InducedRecord>;

/** A record after `respond`: it carries the preferred (chosen) response. */
export const RespondedRecord = InducedRecord.extend({ chosen: z.string().min(1) });
export type RespondedRecord = z.infer<typeof RespondedRecord>;

/** One preference pair, in the TRL / Hugging Face "standard" DPO shape plus metadata. */
export const Pair = z.object({
  id: z.string().min(1),
  prompt: z.string().min(1),
  chosen: z.string().min(1),
  rejected: z.string().min(1),
  category: z.string().nullable(),
  metadata: z.object({
    source: z.string(),
    line: z.number().int().positive(),
    stages: z.record(z.string(), StageTrace),
    input: z.record(z.string(), z.unknown()),
  }),
});
export type Pair = z.infer<typeof Pair>;

/** Why a record left the pipeline. Every input record ends in exactly one pair or one reject. */
export const Reject = z.object({
  id: z.string().min(1),
  stage: StageName,
  reason: z.string().min(1),
  detail: z.string(),
  source: z.string(),
  line: z.number().int().positive().nullable(),
  /** For a duplicate: the id of the record it duplicates, which went on. */
  duplicateOf: z.string().optional(),
});
export type Reject = z.infer<typeof Reject>;

/** The input of every shard stage: a pointer, never records. */
export const ShardTask = z.object({
  runId: z.string().min(1),
  shard: z.string().regex(/^\d{5}$/),
});
export type ShardTask = z.infer<typeof ShardTask>;

/** The output of every shard stage. */
export const ShardResult = ShardTask.extend({ records: z.number().int().nonnegative() });
export type ShardResult = z.infer<typeof ShardResult>;

/** Counts and model usage of one stage over one shard (or, summed, over a run). */
export const StageStats = z.object({
  in: z.number().int().nonnegative(),
  out: z.number().int().nonnegative(),
  rejected: z.number().int().nonnegative(),
  /**
   * Model calls this run paid for, each once: made now, or made by an attempt of the same execution
   * that failed before writing its stats and read back from the cache.
   */
  calls: z.number().int().nonnegative(),
  inputTokens: z.number().int().nonnegative(),
  outputTokens: z.number().int().nonnegative(),
  costUsd: z.number().nonnegative(),
  ms: z.number().nonnegative(),
  /** Answers read from the cache instead of asking the model again. */
  cacheHits: z.number().int().nonnegative().default(0),
  /** Calls looked up in the cache and not found, then paid for. */
  cacheMisses: z.number().int().nonnegative().default(0),
  /** Answers the service throttled (HTTP 429), each retried after a backoff. */
  throttled: z.number().int().nonnegative().default(0),
  /** Retries after throttling or a transient failure. */
  retries: z.number().int().nonnegative().default(0),
});
export type StageStats = z.infer<typeof StageStats>;

/**
 * The execution input. A run starts from an S3 "Object Created" event delivered by EventBridge,
 * or from a direct request naming the input key (the CLI, a test, a manual StartExecution).
 */
export const S3ObjectCreatedEvent = z.object({
  'detail-type': z.literal('Object Created'),
  detail: z.object({
    bucket: z.object({ name: z.string() }),
    object: z.object({
      key: z.string().min(1),
      etag: z.string().optional(),
      size: z.number().optional(),
      'version-id': z.string().optional(),
      /** Unique per object change, and the same in a redelivered event. */
      sequencer: z.string().optional(),
    }),
  }),
});
/** A run started by naming the input key directly. */
export const DirectStart = z.object({ inputKey: z.string().min(1), etag: z.string().optional() });
/** Split's payload: how the run started, the execution, and the configuration. */
export const SplitInput = z.object({
  event: z.union([S3ObjectCreatedEvent, DirectStart]),
  executionId: z.string().min(1),
  /** The pipeline configuration, a constant of the deployed definition; split freezes it into the run. */
  config: z.unknown(),
});
export type SplitInput = z.infer<typeof SplitInput>;

/** What `split` hands to the Map: the run, its shard ids and the record count. */
export const SplitResult = z.object({
  runId: z.string(),
  duplicate: z.boolean(),
  shards: z.array(z.string()),
  records: z.number().int().nonnegative(),
});
export type SplitResult = z.infer<typeof SplitResult>;

/** One Map iteration's outcome; a failed shard names the error Step Functions caught. */
export const ShardOutcome = z.union([
  ShardResult,
  z.object({ shard: z.string(), failed: z.literal(true), error: z.string() }),
]);
export type ShardOutcome = z.infer<typeof ShardOutcome>;

/** A dedup pass's payload: the run and the field it deduplicates. */
export const DedupInput = z.object({
  runId: z.string().min(1),
  field: z.enum(['text', 'instruction']),
});
export type DedupInput = z.infer<typeof DedupInput>;

/** A dedup pass's output: the shards ready for the next Map, and the records they hold. */
export const DedupResult = z.object({
  runId: z.string(),
  shards: z.array(z.string()),
  records: z.number().int().nonnegative(),
});
export type DedupResult = z.infer<typeof DedupResult>;

/** Merge's payload: the run and the outcome of each iteration of both Maps. */
export const MergeInput = z.object({
  runId: z.string().min(1),
  induceResults: z.array(ShardOutcome).optional(),
  shardResults: z.array(ShardOutcome).optional(),
});
export type MergeInput = z.infer<typeof MergeInput>;

/** The claim on a run that `split` writes first: the execution that owns it and the input it reads. */
export const RunMarker = z.object({
  executionId: z.string().min(1),
  inputKey: z.string().min(1),
  etag: z.string().nullable(),
});
export type RunMarker = z.infer<typeof RunMarker>;

/** The run manifest `split` writes: what came in and how it was sharded. */
export const Manifest = z.object({
  runId: z.string(),
  executionId: z.string(),
  inputKey: z.string(),
  etag: z.string().nullable(),
  startedAt: z.string(),
  shards: z.array(z.object({ shard: z.string(), records: z.number().int().nonnegative() })),
  records: z.number().int().nonnegative(),
  rejected: z.number().int().nonnegative(),
});
export type Manifest = z.infer<typeof Manifest>;

/** The execution's output: the run's counts and where its outputs are. */
export const MergeResult = z.object({
  runId: z.string(),
  pairs: z.number().int().nonnegative(),
  rejects: z.number().int().nonnegative(),
  pairsKey: z.string(),
  rejectsKey: z.string(),
  reportKey: z.string(),
  /** The exports: each JSONL format, Parquet, the dataset card and report.html. */
  exportKeys: z.array(z.string()).default([]),
});
export type MergeResult = z.infer<typeof MergeResult>;
