import { z } from 'zod';
import { DirectStart, S3ObjectCreatedEvent } from '../pipeline/schemas.js';

/** Uploads of reversed training data under this prefix start a ReverseTuning execution. */
export const TUNING_INCOMING_PREFIX = 'tuning/incoming/';
/** Where Bedrock writes a job's output (metrics), one folder per job. */
export const TUNING_OUTPUT_PREFIX = 'tuning/output/';
/** The record of one finished tuning, by job name: what the induction stage's parameter points at. */
export const tuningManifestKey = (jobName: string) => `tuning/manifests/${jobName}.json`;
/**
 * The record of what ServeModel created for a job, written the moment it exists: a deployment or
 * Provisioned Throughput is never created twice, and is never billing without a record of it.
 */
export const tuningServingKey = (jobName: string) => `tuning/manifests/${jobName}.serving.json`;

/** How the tuned model is made invokable, with `auto` resolved. */
export const Serving = z.enum(['none', 'deployment', 'provisioned']);
export type Serving = z.infer<typeof Serving>;

/** ServeModel's answer: where serving stands, and the ARN induction invokes once it is ready. */
export const Served = z.object({
  status: z.enum(['ready', 'creating']),
  customModelArn: z.string(),
  /** The provisioned model or deployment ARN, once created. */
  servingArn: z.string().optional(),
  /** What `bedrock:InvokeModel` is called with: the serving ARN, or the custom model itself. */
  invokeArn: z.string().optional(),
  jobArn: z.string().optional(),
  /** How many times serving was found still being created. */
  polls: z.number().int().nonnegative().optional(),
});
export type Served = z.infer<typeof Served>;

/** PrepareTuning's payload: how the execution started, and the constants of the deployed definition. */
export const PrepareTuningInput = z.object({
  event: z.union([S3ObjectCreatedEvent, DirectStart]),
  /** The bucket holding the training data; Bedrock reads it by S3 URI. */
  bucket: z.string().min(1),
  /** The `tuning` section of the configuration. */
  tuning: z.unknown(),
  /** The SSM parameter the tuned model's spec is written to. */
  parameterName: z.string().min(1),
});
export type PrepareTuningInput = z.infer<typeof PrepareTuningInput>;

/** What the customization job is given, and whether an earlier execution already tuned on this data. */
export const PreparedTuning = z.object({
  /** An earlier execution finished this tuning: its manifest exists, nothing is paid again. */
  done: z.boolean(),
  /**
   * The job of this name already completed (an earlier execution failed after it): its model is served
   * and recorded without training again.
   */
  trained: z.boolean(),
  /** The finished job, when `trained`, as the customization task would have returned it. */
  job: z.object({ JobArn: z.string(), OutputModelArn: z.string() }).optional(),
  /** What an earlier execution served, when `done`: recorded again, so the parameter points at it. */
  served: Served.optional(),
  key: z.string(),
  etag: z.string(),
  records: z.number().int().positive(),
  format: z.string(),
  baseModel: z.string(),
  hyperParameters: z.record(z.string(), z.string()),
  /** The job and custom model name, and the idempotency token: one per (data, base model, hyperparameters). */
  jobName: z.string(),
  token: z.string(),
  trainingUri: z.string(),
  outputUri: z.string(),
  serving: Serving,
  modelUnits: z.number().int().positive(),
  parameterName: z.string(),
});
export type PreparedTuning = z.infer<typeof PreparedTuning>;

/** The customization task's result: GetModelCustomizationJob's fields, in either casing. */
export const CustomizationJob = z
  .object({
    JobArn: z.string().optional(),
    jobArn: z.string().optional(),
    OutputModelArn: z.string().optional(),
    outputModelArn: z.string().optional(),
  })
  .transform((j) => ({ jobArn: j.JobArn ?? j.jobArn, outputModelArn: j.OutputModelArn ?? j.outputModelArn }));
export type CustomizationJob = z.output<typeof CustomizationJob>;

/** ServeModel's payload: the prepared tuning, the job's result and the previous answer while it polls. */
export const ServeModelInput = z.object({
  prepared: PreparedTuning,
  job: z.unknown().optional(),
  /** Status `none` before the first call. */
  served: z
    .union([Served, z.strictObject({ status: z.literal('none') })])
    .optional()
    .transform((s) => (s?.status === 'none' ? undefined : s)),
});
export type ServeModelInput = Omit<z.output<typeof ServeModelInput>, 'served'> & { readonly served?: Served };

/** RecordModel's payload. */
export const RecordModelInput = z.object({ prepared: PreparedTuning, served: Served });
export type RecordModelInput = z.infer<typeof RecordModelInput>;

/** The record of a finished tuning, in the bucket and as RecordModel's result. */
export const TuningManifest = z.object({
  jobName: z.string(),
  jobArn: z.string().optional(),
  baseModel: z.string(),
  format: z.string(),
  hyperParameters: z.record(z.string(), z.string()),
  trainingKey: z.string(),
  trainingEtag: z.string(),
  records: z.number().int(),
  customModelArn: z.string(),
  serving: Serving,
  servingArn: z.string().optional(),
  /** The model spec induction uses: what the SSM parameter holds. */
  modelSpec: z.string(),
  parameterName: z.string(),
  /** Whether the parameter points at this model: not when it is served `none`, and cannot be invoked. */
  parameterWritten: z.boolean().default(true),
  recordedAt: z.string(),
});
export type TuningManifest = z.infer<typeof TuningManifest>;
