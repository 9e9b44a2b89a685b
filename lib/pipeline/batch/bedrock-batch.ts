import { posix } from 'node:path';
import {
  type BedrockClient,
  CreateModelInvocationJobCommand,
  GetModelInvocationJobCommand,
  ListModelInvocationJobsCommand,
  type ListModelInvocationJobsCommandOutput,
  type ModelInvocationJobSummary,
  StopModelInvocationJobCommand,
} from '@aws-sdk/client-bedrock';
import { z } from 'zod';
import { BatchSubmitError, ModelTransientError } from '../errors.js';
import { BEDROCK_CONFIG, BEDROCK_THROTTLED, BEDROCK_TRANSIENT, mapAwsError } from '../models/aws-errors.js';
import { parseModelSpec } from '../models/registry.js';
import type { Store } from '../store/store.js';
import { BATCH_JOB_STATUSES, type BatchJobStatus } from './batch-job.js';
import {
  type BatchJobSpec,
  type BatchJobState,
  type BatchService,
  type BatchTokenRecord,
  batchKey,
  batchTokenKey,
  ENDED_STATUSES,
} from './batch-service.js';

/** Options of a BedrockBatchService. */
export interface BedrockBatchOptions {
  /** The Bedrock control plane. */
  readonly bedrock: Pick<BedrockClient, 'send'>;
  /** The run bucket's store: job inputs, outputs, task tokens and job ARNs live there. */
  readonly store: Store;
  /** The run bucket's name, for the S3 URIs Bedrock reads and writes. */
  readonly bucket: string;
  /** The service role Bedrock assumes to read the input and write the output. */
  readonly roleArn: string;
}

/** What `submitted.json` holds: the ARN of the job Bedrock started. */
const Submitted = z.object({ jobArn: z.string().min(1) });

// A stop that meets a job already ended, or never started, has nothing left to do.
const ALREADY_ENDED = new Set(['ValidationException', 'ConflictException', 'ResourceNotFoundException']);

/** A job's status as the pipeline knows it; a status Bedrock adds later is waited on like a running one. */
const statusOf = (status: string | undefined): BatchJobStatus =>
  (BATCH_JOB_STATUSES as readonly string[]).includes(status ?? '') ? (status as BatchJobStatus) : 'Submitted';

/**
 * Maps a Bedrock control-plane error: quotas (a throttle, too many jobs in flight) to ModelThrottledError,
 * 5xx and dropped connections to ModelTransientError, and any other refusal to BatchSubmitError.
 */
function batchError(error: unknown, jobName: string): unknown {
  return mapAwsError(error, {
    who: `bedrock batch job ${jobName}`,
    service: 'Bedrock',
    throttled: BEDROCK_THROTTLED,
    transient: BEDROCK_TRANSIENT,
    late: (e, message) => {
      const status = e.$metadata?.httpStatusCode;
      if (
        BEDROCK_CONFIG.has(e.name) ||
        e.name === 'ValidationException' ||
        (status !== undefined && status >= 400 && status < 500)
      )
        return new BatchSubmitError(message, { cause: e });
      return undefined;
    },
  });
}

/**
 * Bedrock batch inference (invocation type `Converse`) over the run bucket. A submit records the
 * workflow's task token under the job's name before anything else, so the job's state-change event can
 * release the wait (see `releaseBatchJob`), then creates the job with the job's idempotency token and
 * records its ARN beside the job's files.
 */
export class BedrockBatchService implements BatchService {
  readonly waitsForCallback = true;
  readonly emulated = false;

  /** The bucket: job names are per account and region, and two stacks may run the same upload. */
  get scope(): string {
    return this.options.bucket;
  }

  constructor(private readonly options: BedrockBatchOptions) {}

  accepts(spec: string): boolean {
    try {
      return parseModelSpec(spec).provider === 'bedrock';
    } catch {
      return false;
    }
  }

  async submit(job: BatchJobSpec, taskToken: string): Promise<BatchJobState | undefined> {
    // Overwritten on purpose: the execution that submits last is the one waiting.
    const record: BatchTokenRecord = { jobName: job.jobName, taskToken, runId: job.runId, stage: job.stage };
    await this.options.store.put(batchTokenKey(job.jobName), JSON.stringify(record));
    let jobArn = await this.recordedArn(job);
    if (jobArn === undefined) {
      jobArn = await this.create(job);
      await this.options.store.put(this.submittedKey(job), JSON.stringify({ jobArn }));
    }
    // A job that ended before the token above was written sent its event to no one: answer for it now.
    const state = await this.describe(job, jobArn);
    return ENDED_STATUSES.has(state.status) ? state : undefined;
  }

  async state(job: BatchJobSpec): Promise<BatchJobState> {
    const jobArn = await this.recordedArn(job);
    return jobArn === undefined ? { status: 'NotSubmitted' } : this.describe(job, jobArn);
  }

  async stop(job: BatchJobSpec): Promise<void> {
    const jobArn = await this.recordedArn(job);
    if (jobArn === undefined) return;
    try {
      await this.options.bedrock.send(new StopModelInvocationJobCommand({ jobIdentifier: jobArn }));
    } catch (error) {
      if (error instanceof Error && ALREADY_ENDED.has(error.name)) return;
      throw batchError(error, job.jobName);
    }
  }

  private submittedKey(job: BatchJobSpec): string {
    return batchKey(job.runId, job.stage, job.jobName, 'submitted.json');
  }

  private async recordedArn(job: BatchJobSpec): Promise<string | undefined> {
    const text = await this.options.store.tryGet(this.submittedKey(job));
    return text === undefined ? undefined : Submitted.parse(JSON.parse(text)).jobArn;
  }

  /** Creates the job, or finds the one a lost response or a lost record left behind under its name. */
  private async create(job: BatchJobSpec): Promise<string> {
    const { bedrock, bucket, roleArn } = this.options;
    const outputUri = `s3://${bucket}/${job.outputPrefix}`;
    let jobArn: string | undefined;
    try {
      ({ jobArn } = await bedrock.send(
        new CreateModelInvocationJobCommand({
          jobName: job.jobName,
          roleArn,
          clientRequestToken: job.token,
          modelId: job.modelId,
          modelInvocationType: 'Converse',
          inputDataConfig: {
            s3InputDataConfig: { s3Uri: `s3://${bucket}/${job.inputKey}`, s3InputFormat: 'JSONL' },
          },
          outputDataConfig: { s3OutputDataConfig: { s3Uri: outputUri } },
          timeoutDurationInHours: job.timeoutHours,
        }),
      ));
    } catch (error) {
      if (!(error instanceof Error && error.name === 'ConflictException'))
        throw batchError(error, job.jobName);
      const found = await this.findByName(job.jobName);
      if (found === undefined)
        throw new ModelTransientError(
          `bedrock batch job ${job.jobName}: Bedrock reports a conflict but lists no job of that name yet`,
          { cause: error },
        );
      // Job names are per account and region: a stack on another bucket may hold this one.
      const foundUri = found.outputDataConfig?.s3OutputDataConfig?.s3Uri;
      if (foundUri !== undefined && foundUri !== outputUri)
        throw new BatchSubmitError(
          `bedrock batch job ${job.jobName}: the name is taken by a job writing to ${foundUri}, not ${outputUri}`,
          { cause: error },
        );
      jobArn = found.jobArn;
    }
    if (!jobArn)
      throw new ModelTransientError(`bedrock batch job ${job.jobName}: Bedrock returned no job ARN`);
    return jobArn;
  }

  private async findByName(jobName: string): Promise<ModelInvocationJobSummary | undefined> {
    let nextToken: string | undefined;
    do {
      let page: ListModelInvocationJobsCommandOutput;
      try {
        page = await this.options.bedrock.send(
          new ListModelInvocationJobsCommand({ nameContains: jobName, nextToken }),
        );
      } catch (error) {
        throw batchError(error, jobName);
      }
      const found = page.invocationJobSummaries?.find((summary) => summary.jobName === jobName);
      if (found?.jobArn) return found;
      nextToken = page.nextToken;
    } while (nextToken);
    return undefined;
  }

  /** The job's state from Bedrock; a job Bedrock does not know (yet) is NotSubmitted. */
  private async describe(job: BatchJobSpec, jobArn: string): Promise<BatchJobState> {
    let status: string | undefined;
    let message: string | undefined;
    try {
      ({ status, message } = await this.options.bedrock.send(
        new GetModelInvocationJobCommand({ jobIdentifier: jobArn }),
      ));
    } catch (error) {
      if (error instanceof Error && error.name === 'ResourceNotFoundException')
        return { status: 'NotSubmitted', message: `Bedrock has no job ${jobArn}` };
      throw batchError(error, job.jobName);
    }
    const known = statusOf(status);
    const jobId = jobArn.slice(jobArn.lastIndexOf('/') + 1);
    // Bedrock writes `<output URI>/<job id>/<input file name>.out`.
    const outputKey =
      known === 'Completed' || known === 'PartiallyCompleted'
        ? `${job.outputPrefix}${jobId}/${posix.basename(job.inputKey)}.out`
        : undefined;
    return { status: known, ...(message ? { message } : {}), ...(outputKey ? { outputKey } : {}) };
  }
}
