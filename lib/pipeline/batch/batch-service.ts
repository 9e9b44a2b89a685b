import { z } from 'zod';
import { runPrefix } from '../keys.js';
import { MODEL_STAGES, type ModelStage } from '../schemas.js';
import { BATCH_JOB_STATUSES, type BatchCall, type BatchJobStatus } from './batch-job.js';

/**
 * One planned batch job, kept as `job.json` beside its input: everything a submit needs, so a retried or
 * resumed submit sends exactly the same request.
 */
export const BatchJobSpec = z.object({
  runId: z.string().min(1),
  stage: z.enum(MODEL_STAGES),
  jobName: z.string().min(1).max(63),
  /** The idempotency token: a retried submit of the same job starts no second billed job. */
  token: z.string().min(1).max(256),
  /** The Bedrock model id the job runs on. */
  modelId: z.string().min(1),
  /** The store key of the job's input JSONL. */
  inputKey: z.string().min(1),
  /** The store key prefix (ending in `/`) the job writes its output under. */
  outputPrefix: z.string().min(1),
  /** Hours the job may wait and run before it expires. */
  timeoutHours: z.number().int().min(24).max(168),
});
export type BatchJobSpec = z.infer<typeof BatchJobSpec>;

/** Where a job stands: its status, and when it wrote output, the store key of its `.jsonl.out`. */
export interface BatchJobState {
  readonly status: BatchJobStatus | 'NotSubmitted';
  readonly outputKey?: string;
  /** Why it failed or was never submitted, as the service said. */
  readonly message?: string;
}

/** The statuses a job ends in; any other means it is still on its way. */
export const ENDED_STATUSES: ReadonlySet<string> = new Set<BatchJobStatus>([
  'Completed',
  'PartiallyCompleted',
  'Failed',
  'Stopped',
  'Expired',
]);

/**
 * Runs batch jobs: Bedrock in AWS, the local emulator on this machine. Neither pays for idle waiting:
 * in AWS the workflow waits on a task token that the job's state-change event releases.
 */
export interface BatchService {
  /**
   * Whether a submitted job's end is reported by its state-change event releasing the workflow's task
   * token (Bedrock); false when `submit` runs the job to its end at once (the emulator).
   */
  readonly waitsForCallback: boolean;
  /** Whether jobs are emulated by on-demand calls (locally): their cost is the on-demand price. */
  readonly emulated: boolean;
  /** Where job names must be unique beyond a run (Bedrock: the bucket; names are per account and region). */
  readonly scope: string;
  /** Whether a stage's model can run as a batch job here (Bedrock takes `bedrock:` Converse models only). */
  accepts(spec: string): boolean;
  /**
   * Submits a job, idempotently by its token, and remembers `taskToken` so the job's end releases it.
   * Resolves with the job's state when it has already ended (always, for the emulator), else undefined.
   * A request the service refuses for good throws BatchSubmitError; a throttle or a quota of jobs in
   * flight throws ModelThrottledError, and anything transient ModelTransientError, for the workflow to retry.
   */
  submit(
    job: BatchJobSpec,
    taskToken: string,
    /** The calls behind the job's records, by record id, for a service that answers them itself. */
    calls: () => Promise<ReadonlyMap<string, BatchCall>>,
  ): Promise<BatchJobState | undefined>;
  /** The job's state now; `NotSubmitted` when it never started. */
  state(job: BatchJobSpec): Promise<BatchJobState>;
  /** Stops a job that outlived the workflow's wait; its records then go on-demand. */
  stop(job: BatchJobSpec): Promise<void>;
}

/** What the workflow's wait on a job gets back: the job and the status it ended in. */
export const BatchJobEnd = z.object({
  jobName: z.string(),
  status: z.enum([...BATCH_JOB_STATUSES, 'NotSubmitted']),
});
export type BatchJobEnd = z.infer<typeof BatchJobEnd>;

/** Where the task token of a submitted job is kept, for the state-change callback to find by job name. */
export const BATCH_TOKENS_PREFIX = 'batch-jobs/';
/** The key of a job's task-token record. */
export const batchTokenKey = (jobName: string) => `${BATCH_TOKENS_PREFIX}${jobName}.json`;

/** A job's task-token record: the wait it releases, and where the job's files are. */
export const BatchTokenRecord = z.object({
  jobName: z.string(),
  taskToken: z.string(),
  runId: z.string(),
  stage: z.string(),
});
export type BatchTokenRecord = z.infer<typeof BatchTokenRecord>;

/** A model stage's batch plan, kept as `runs/<id>/batch/<stage>/plan.json`: made once, so a rerun submits the same jobs. */
export const BatchPlan = z.object({
  stage: z.enum(MODEL_STAGES),
  /** Whether the stage went to batch jobs, and if not, why (`reason`). */
  mode: z.enum(['batch', 'on-demand']),
  reason: z.string().optional(),
  /** The calls the cache could not answer when the stage was planned. */
  calls: z.number().int().nonnegative(),
  jobs: z.array(z.object({ jobName: z.string(), records: z.number().int().positive() })),
  /** Calls no job took (too few for a job of their own), left to on-demand. */
  onDemand: z.number().int().nonnegative(),
});
export type BatchPlan = z.infer<typeof BatchPlan>;

/** What one job did, kept as `runs/<id>/batch/<stage>/<job>/stats.json` when it ended and was joined. */
export const BatchJobStats = z.object({
  jobName: z.string(),
  status: z.enum([...BATCH_JOB_STATUSES, 'NotSubmitted']),
  /** Records in the job's input. */
  records: z.number().int().nonnegative(),
  /** Answers put into the call cache (billed by Bedrock). */
  answered: z.number().int().nonnegative(),
  /** Records whose output line was an error or unreadable answer: paid on-demand. */
  errored: z.number().int().nonnegative(),
  /** Records with no output line: paid on-demand. Records the cache answered meanwhile are neither. */
  missing: z.number().int().nonnegative(),
  inputTokens: z.number().int().nonnegative(),
  outputTokens: z.number().int().nonnegative(),
  /** At the model's batch price. */
  costUsd: z.number().nonnegative(),
  /** Run by the local emulator, whose answers were on-demand calls and are priced as such. */
  emulated: z.boolean().optional(),
  /** Why the job's records went on-demand, when it failed, expired, stopped or was refused. */
  message: z.string().optional(),
});
export type BatchJobStats = z.infer<typeof BatchJobStats>;

/** Where a stage's batch files are: `plan.json`, and per job `job.json`, `input.jsonl`, `records.json`, `submitted.json`, `stats.json`. */
export const batchKey = (runId: string, stage: ModelStage, jobName: string, file: string) =>
  `${runPrefix(runId)}/batch/${stage}/${jobName}/${file}`;
/**
 * Where Bedrock writes job outputs: a prefix of its own, since Bedrock cannot tag what it writes and a
 * lifecycle rule on the prefix is what expires it.
 */
export const BATCH_OUTPUT_PREFIX = 'batch-output/';
/** The output prefix of one job. */
export const batchOutputPrefix = (runId: string, stage: ModelStage, jobName: string) =>
  `${BATCH_OUTPUT_PREFIX}${runId}/${stage}/${jobName}/`;
/** The key of a stage's batch plan. */
export const batchPlanKey = (runId: string, stage: ModelStage) =>
  `${runPrefix(runId)}/batch/${stage}/plan.json`;
