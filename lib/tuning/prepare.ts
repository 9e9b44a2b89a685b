import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { TuningConfig } from '../pipeline/config.js';
import { ConfigError, InputError } from '../pipeline/errors.js';
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

/** The training data cannot be used: a line is not JSON or not in the base model's format. */
export class TrainingDataError extends Error {
  override name = 'TrainingDataError';
}

/** The serving `auto` stands for: a per-token deployment for Nova, nothing billed by the hour otherwise. */
export const servingFor = (tuning: TuningConfig): Serving =>
  tuning.serving !== 'auto'
    ? tuning.serving
    : tuning.baseModel.startsWith('amazon.nova-')
      ? 'deployment'
      : 'none';

/** The first problem of a JSONL training object, naming key and line; also counts its records. */
async function checkTrainingData(
  lines: AsyncIterable<string>,
  key: string,
  format: ReverseFormat,
): Promise<number> {
  const schema = REVERSE_RECORD_SCHEMAS[format];
  let line = 0;
  let records = 0;
  for await (const text of lines) {
    line++;
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
  return records;
}

/**
 * ReverseTuning's first step: checks that the uploaded training data is in the format the configured
 * base model is fine-tuned on, before anything is paid, and names the job after the data, the base model
 * and the hyperparameters. An execution over data already tuned the same way finds its manifest and
 * returns `done`: the same tuning is never paid for twice.
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
  const key =
    'detail' in event ? decodeURIComponent(event.detail.object.key.replace(/\+/g, ' ')) : event.inputKey;
  if (!key.startsWith(TUNING_INCOMING_PREFIX))
    throw new InputError(`${key}: training data must be uploaded under ${TUNING_INCOMING_PREFIX}`);
  const head = await deps.store.head(key);
  if (!head) throw new InputError(`${key}: no such training data object`);

  const identity = JSON.stringify([key, head.etag, tuning.baseModel, tuning.hyperParameters]);
  const hash = createHash('sha256').update(identity).digest('hex').slice(0, 20);
  const jobName = `safer-instruct-${hash}`;
  const manifest = await deps.store.tryGet(tuningManifestKey(jobName));
  const done = manifest !== undefined;
  const records = done
    ? TuningManifest.parse(JSON.parse(manifest)).records
    : await checkTrainingData(
        createInterface({ input: await deps.store.getStream(key), crlfDelay: Number.POSITIVE_INFINITY }),
        key,
        format,
      );
  return {
    done,
    key,
    etag: head.etag,
    records,
    format,
    baseModel: tuning.baseModel,
    hyperParameters: tuning.hyperParameters,
    jobName,
    token: hash,
    trainingUri: `s3://${input.bucket}/${key}`,
    outputUri: `s3://${input.bucket}/${TUNING_OUTPUT_PREFIX}${jobName}/`,
    serving: servingFor(tuning),
    modelUnits: tuning.modelUnits,
    parameterName: input.parameterName,
  };
}
