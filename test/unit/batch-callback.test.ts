import {
  InvalidToken,
  SendTaskSuccessCommand,
  SFNClient,
  TaskDoesNotExist,
  TaskTimedOut,
} from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { createHandler } from '../../lambdas/batch-callback.js';
import { batchTokenKey } from '../../lib/pipeline/batch/batch-service.js';
import { type CallbackDeps, releaseBatchJob } from '../../lib/pipeline/batch/callback.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { tempDir } from '../support/temp.js';

const sfn = mockClient(SFNClient);
afterEach(() => sfn.reset());

const JOB = 'safer-instruct-respond-0123456789abcdef';
const ARN = 'arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456';

/** A state-change event as Bedrock documents it. */
const stateChange = (
  status: string,
  detail: Record<string, unknown> = { batchJobName: JOB, batchJobArn: ARN },
) => ({
  version: '0',
  id: 'e1',
  'detail-type': 'Batch Inference Job State Change',
  source: 'aws.bedrock',
  account: '123456789012',
  time: '2025-01-01T00:00:00Z',
  region: 'us-east-1',
  resources: [ARN],
  detail: { version: '0.0', accountId: '123456789012', ...detail, status },
});

async function depsWithToken(taskToken: string | null = 'task-token-1'): Promise<CallbackDeps> {
  const store = new FsStore(tempDir());
  if (taskToken !== null)
    await store.put(
      batchTokenKey(JOB),
      JSON.stringify({ jobName: JOB, taskToken, runId: 'run-1', stage: 'respond' }),
    );
  return { store, sfn: new SFNClient({ region: 'us-east-1' }) };
}

describe('releaseBatchJob', () => {
  it('releases the wait of an ended job with the job’s name and end status', async () => {
    // Prepare
    const deps = await depsWithToken();
    sfn.on(SendTaskSuccessCommand).resolves({});

    // Act
    const result = await releaseBatchJob(stateChange('PartiallyCompleted'), deps);

    // Assess
    expect(result).toEqual({ released: true });
    expect(sfn.commandCalls(SendTaskSuccessCommand).map((call) => call.args[0].input)).toEqual([
      { taskToken: 'task-token-1', output: JSON.stringify({ jobName: JOB, status: 'PartiallyCompleted' }) },
    ]);
  });

  it('reads jobName and an ARN from resources when the documented fields are absent', async () => {
    // Prepare
    const deps = await depsWithToken();
    sfn.on(SendTaskSuccessCommand).resolves({});

    // Act
    const result = await releaseBatchJob(stateChange('Failed', { jobName: JOB }), deps);

    // Assess
    expect(result).toEqual({ released: true });
    expect(JSON.parse(sfn.commandCalls(SendTaskSuccessCommand)[0]?.args[0].input.output ?? '')).toEqual({
      jobName: JOB,
      status: 'Failed',
    });
  });

  it('leaves the wait of a job still on its way', async () => {
    // Prepare
    const deps = await depsWithToken();

    // Act
    const result = await releaseBatchJob(stateChange('InProgress'), deps);

    // Assess
    expect(result).toMatchObject({ released: false, reason: expect.stringContaining('InProgress') });
    expect(sfn.calls()).toHaveLength(0);
  });

  it('ignores a job it keeps no token for: one of another stack, or not the pipeline’s', async () => {
    // Prepare
    const deps = await depsWithToken(null);

    // Act
    const result = await releaseBatchJob(stateChange('Completed'), deps);

    // Assess
    expect(result).toMatchObject({ released: false });
    expect(sfn.calls()).toHaveLength(0);
  });

  it('ignores an event that is not a batch job state change', async () => {
    // Prepare
    const deps = await depsWithToken();

    // Act
    const result = await releaseBatchJob({ detail: { jobName: JOB } }, deps);

    // Assess
    expect(result).toMatchObject({ released: false });
    expect(sfn.calls()).toHaveLength(0);
  });

  it.each([
    ['TaskDoesNotExist', new TaskDoesNotExist({ message: 'no such task', $metadata: {} })],
    ['TaskTimedOut', new TaskTimedOut({ message: 'timed out', $metadata: {} })],
    ['InvalidToken', new InvalidToken({ message: 'invalid token', $metadata: {} })],
  ])('swallows %s: a later execution resubmitted the job and waits on a newer token', async (_, error) => {
    // Prepare
    const deps = await depsWithToken();
    sfn.on(SendTaskSuccessCommand).rejects(error);

    // Act
    const result = await releaseBatchJob(stateChange('Completed'), deps);

    // Assess
    expect(result).toEqual({ released: false, reason: 'stale token' });
  });

  it('throws any other Step Functions failure, for EventBridge to retry the invocation', async () => {
    // Prepare
    const deps = await depsWithToken();
    const throttled = Object.assign(new Error('rate exceeded'), { name: 'ThrottlingException' });
    sfn.on(SendTaskSuccessCommand).rejects(throttled);

    // Act
    const act = releaseBatchJob(stateChange('Completed'), deps);

    // Assess
    await expect(act).rejects.toMatchObject({ name: 'ThrottlingException' });
  });
});

describe('batch-callback handler', () => {
  it('releases through the dependencies it is built over', async () => {
    // Prepare
    const deps = await depsWithToken();
    sfn.on(SendTaskSuccessCommand).resolves({});
    const handler = createHandler(() => deps);

    // Act
    const result = await handler(stateChange('Stopped'));

    // Assess
    expect(result).toEqual({ released: true });
  });
});
