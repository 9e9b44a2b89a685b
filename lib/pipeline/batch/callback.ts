import { S3Client } from '@aws-sdk/client-s3';
import { SendTaskSuccessCommand, SFNClient } from '@aws-sdk/client-sfn';
import { z } from 'zod';
import { loadEnv } from '../env.js';
import { S3Store } from '../store/s3-store.js';
import type { Store } from '../store/store.js';
import { BatchJobEnd, BatchTokenRecord, batchTokenKey, ENDED_STATUSES } from './batch-service.js';

/**
 * The EventBridge event of a Bedrock batch job's change of state (`source: aws.bedrock`, `detail-type:
 * Batch Inference Job State Change`), read leniently: the documented detail names the job in
 * `batchJobName` and `batchJobArn`; `jobName` and `jobArn` are taken too, and `resources[0]` for the ARN.
 */
export const BatchJobStateChange = z.object({
  source: z.string().optional(),
  'detail-type': z.string().optional(),
  resources: z.array(z.string()).optional(),
  detail: z.object({
    batchJobName: z.string().min(1).optional(),
    jobName: z.string().min(1).optional(),
    batchJobArn: z.string().min(1).optional(),
    jobArn: z.string().min(1).optional(),
    status: z.string().min(1),
  }),
});
export type BatchJobStateChange = z.infer<typeof BatchJobStateChange>;

/** What releasing a job's wait needs: the store its task token is in, and Step Functions. */
export interface CallbackDeps {
  readonly store: Store;
  readonly sfn: Pick<SFNClient, 'send'>;
}

/** What the callback did with an event, and if it released nothing, why. */
export interface ReleaseResult {
  readonly released: boolean;
  readonly reason?: string;
}

// The wait the token belonged to is gone: a later execution resubmitted the job, or the wait timed out.
const STALE_TOKEN = new Set(['TaskDoesNotExist', 'TaskTimedOut', 'InvalidToken']);

/**
 * Releases the workflow waiting on a batch job when the job ends, with the job's BatchJobEnd as the
 * task's output. An event of a job still on its way, of a job this stack did not submit, or for a wait
 * that no longer exists releases nothing; any other Step Functions failure is thrown, for EventBridge to
 * retry the invocation.
 */
export async function releaseBatchJob(event: unknown, deps: CallbackDeps): Promise<ReleaseResult> {
  const parsed = BatchJobStateChange.safeParse(event);
  if (!parsed.success) return { released: false, reason: 'not a batch inference job state change' };
  const { detail, resources } = parsed.data;
  const jobName = detail.batchJobName ?? detail.jobName;
  const jobArn = detail.batchJobArn ?? detail.jobArn ?? resources?.[0];
  const who = jobName ?? jobArn ?? 'an unnamed job';
  if (!ENDED_STATUSES.has(detail.status))
    return { released: false, reason: `${who} is ${detail.status}, not ended` };
  if (!jobName) return { released: false, reason: `the event names no job (${who})` };

  const text = await deps.store.tryGet(batchTokenKey(jobName));
  if (text === undefined) return { released: false, reason: `no task token is kept for ${jobName}` };
  const { taskToken } = BatchTokenRecord.parse(JSON.parse(text));
  const output: BatchJobEnd = BatchJobEnd.parse({ jobName, status: detail.status });
  try {
    await deps.sfn.send(new SendTaskSuccessCommand({ taskToken, output: JSON.stringify(output) }));
  } catch (error) {
    if (error instanceof Error && STALE_TOKEN.has(error.name))
      return { released: false, reason: 'stale token' };
    throw error;
  }
  return { released: true };
}

let processDeps: CallbackDeps | undefined;

/** The callback's dependencies in a Lambda process, built once from its environment. */
export const defaultCallbackDeps = (): CallbackDeps => {
  processDeps ??= {
    store: new S3Store(new S3Client({}), loadEnv().BUCKET_NAME),
    sfn: new SFNClient({}),
  };
  return processDeps;
};
