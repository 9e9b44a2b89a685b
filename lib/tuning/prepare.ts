import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { GetModelCustomizationJobCommand } from '@aws-sdk/client-bedrock';
import { TuningConfig } from '../pipeline/config.js';
import { ConfigError, InputError } from '../pipeline/errors.js';
import { resolveKey } from '../pipeline/stages/split.js';
import { REVERSE_RECORD_SCHEMAS, type ReverseFormat, tuningFormatOf } from '../reverse/formats.js';
import type { TuningDeps } from './deps.js';
import {
  type PreparedTuning,
  type PrepareTuningInput,
  type Serving,
  TUNING_INCOMING_PREFIX,
  TUNING_OUTPUT_PREFIX,
  TuningManifest,
  tuningManifestKey,
} from './schemas.js';
import { bedrockTransient } from './serve.js';

/** The training data cannot be used: a line is not JSON or not in the base model's format. */
export class TrainingDataError extends Error {
  override name = 'TrainingDataError';
}

/** A job of this tuning is still running, started by another execution; that execution records it. */
export class TuningInProgressError extends Error {
  override name = 'TuningInProgressError';
}

/** The serving `auto` stands for: a per-token deployment for Nova, nothing billed by the hour otherwise. */
export const servingFor = (tuning: TuningConfig): Serving =>
  tuning.serving !== 'auto'
    ? tuning.serving
    : tuning.baseModel.startsWith('amazon.nova-')
      ? 'deployment'
      : 'none';

/** Failed attempts at one tuning before the workflow gives up on it. */
const MAX_ATTEMPTS = 5;

/** Checks every line of a JSONL training object, naming key and line; returns the count and content hash. */
async function checkTrainingData(
  lines: AsyncIterable<string>,
  key: string,
  format: ReverseFormat,
): Promise<{ records: number; sha256: string }> {
  const schema = REVERSE_RECORD_SCHEMAS[format];
  const hash = createHash('sha256');
  let line = 0;
  let records = 0;
  for await (const text of lines) {
    line++;
    hash.update(`${text}\n`);
    if (!text.trim()) continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new TrainingDataError(`${key} line ${line}: not JSON`);
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new TrainingDataError(
        `${key} line ${line}: not a ${format} record (${issue?.path.join('.') || '(root)'}: ${issue?.message}); ` +
          `write it with: safer-instruct reverse-data <dataset> --format ${format}`,
      );
    }
    records++;
  }
  if (records === 0) throw new TrainingDataError(`${key}: no training records`);
  return { records, sha256: hash.digest('hex') };
}

/** Where a job name stands on Bedrock: unknown, or its status and, once completed, its model. */
async function jobState(deps: TuningDeps, jobName: string) {
  try {
    const job = await deps.bedrock().send(new GetModelCustomizationJobCommand({ jobIdentifier: jobName }));
    return { status: job.status ?? 'InProgress', jobArn: job.jobArn, outputModelArn: job.outputModelArn };
  } catch (error) {
    if ((error as Error).name === 'ResourceNotFoundException') return undefined;
    throw bedrockTransient(error);
  }
}

/**
 * ReverseTuning's first step: checks that the uploaded training data is in the format the configured
 * base model is fine-tuned on, before anything is paid, and names the job after the data's content, the
 * bucket, the base model and the hyperparameters. The same tuning is never paid for twice: one recorded
 * before is `done` (and recorded again, so the parameter points at it); one whose job completed but whose
 * execution failed later is `trained` (served and recorded without training); one whose job failed is
 * tried again under the next attempt's name.
 */
export async function prepareTuning(input: PrepareTuningInput, deps: TuningDeps): Promise<PreparedTuning> {
  const parsedTuning = TuningConfig.safeParse(input.tuning ?? {});
  if (!parsedTuning.success)
    throw new ConfigError(
      `the tuning configuration: ${parsedTuning.error.issues.map((i) => i.message).join('; ')}`,
    );
  const tuning = parsedTuning.data;
  const format = tuningFormatOf(tuning.baseModel);
  const event = input.event;
  const given = 'detail' in event ? event.detail.object.key : event.inputKey;
  const { key, head } = await resolveKey(deps.store, given);
  if (!key.startsWith(TUNING_INCOMING_PREFIX))
    throw new InputError(`${key}: training data must be uploaded under ${TUNING_INCOMING_PREFIX}`);
  if (!head) throw new InputError(`${key}: no such training data object`);

  const { records, sha256 } = await checkTrainingData(
    createInterface({ input: await deps.store.getStream(key), crlfDelay: Number.POSITIVE_INFINITY }),
    key,
    format,
  );
  // Sorted: the same hyperparameters written in another order are the same tuning.
  const hyperParameters = Object.fromEntries(
    Object.entries(tuning.hyperParameters).sort(([a], [b]) => (a < b ? -1 : 1)),
  );
  const identity = JSON.stringify([input.bucket, sha256, tuning.baseModel, hyperParameters]);
  const hash = createHash('sha256').update(identity).digest('hex').slice(0, 20);
  const base = {
    key,
    etag: head.etag,
    records,
    format,
    baseModel: tuning.baseModel,
    hyperParameters,
    serving: servingFor(tuning),
    modelUnits: tuning.modelUnits,
    parameterName: input.parameterName,
  };

  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const jobName = `safer-instruct-${hash}${attempt > 1 ? `-${attempt}` : ''}`;
    const named = {
      ...base,
      jobName,
      token: `${hash}${attempt > 1 ? `-${attempt}` : ''}`,
      trainingUri: `s3://${input.bucket}/${key}`,
      outputUri: `s3://${input.bucket}/${TUNING_OUTPUT_PREFIX}${jobName}/`,
    };
    const manifest = await deps.store.tryGet(tuningManifestKey(jobName));
    if (manifest !== undefined) {
      const recorded = TuningManifest.parse(JSON.parse(manifest));
      const served = {
        status: 'ready' as const,
        customModelArn: recorded.customModelArn,
        ...(recorded.servingArn ? { servingArn: recorded.servingArn, invokeArn: recorded.servingArn } : {}),
        ...(recorded.jobArn ? { jobArn: recorded.jobArn } : {}),
      };
      // Recorded as it was served then: serving settings changed since apply to new tunings only.
      return { ...named, serving: recorded.serving, done: true, trained: true, served };
    }
    const job = await jobState(deps, jobName);
    if (!job) return { ...named, done: false, trained: false };
    if (job.status === 'Completed' && job.jobArn && job.outputModelArn)
      return {
        ...named,
        done: false,
        trained: true,
        job: { JobArn: job.jobArn, OutputModelArn: job.outputModelArn },
      };
    if (job.status === 'InProgress' || job.status === 'Stopping')
      throw new TuningInProgressError(
        `customization job ${jobName} for ${key} is ${job.status}: the execution that started it serves and records it`,
      );
  }
  throw new TrainingDataError(
    `${key}: ${MAX_ATTEMPTS} customization jobs of this data failed or were stopped; see them in the Bedrock console`,
  );
}
