import {
  AccessDeniedException,
  BedrockClient,
  ConflictException,
  CreateModelInvocationJobCommand,
  GetModelInvocationJobCommand,
  InternalServerException,
  ListModelInvocationJobsCommand,
  ResourceNotFoundException,
  ServiceQuotaExceededException,
  StopModelInvocationJobCommand,
  ThrottlingException,
  ValidationException,
} from '@aws-sdk/client-bedrock';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { type BatchJobSpec, batchKey, batchTokenKey } from '../../lib/pipeline/batch/batch-service.js';
import { BedrockBatchService } from '../../lib/pipeline/batch/bedrock-batch.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { tempDir } from '../support/temp.js';

const bedrock = mockClient(BedrockClient);
afterEach(() => bedrock.reset());

const ROLE = 'arn:aws:iam::123456789012:role/batch-inference';
const JOB_ID = 'abc123def456';
const ARN = `arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/${JOB_ID}`;
const OTHER_ARN = 'arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/zzz999yyy888';
const PREFIX = 'runs/run-1/batch/respond/safer-instruct-respond-0123456789abcdef/';

const job: BatchJobSpec = {
  runId: 'run-1',
  stage: 'respond',
  jobName: 'safer-instruct-respond-0123456789abcdef',
  token: '0123456789abcdef0123456789abcdef',
  modelId: 'anthropic.claude-3-haiku-20240307-v1:0',
  inputKey: `${PREFIX}input.jsonl`,
  outputPrefix: `${PREFIX}output/`,
  timeoutHours: 72,
};
const submittedKey = batchKey(job.runId, job.stage, job.jobName, 'submitted.json');

function serviceOver(store = new FsStore(tempDir())) {
  const client = new BedrockClient({ region: 'us-east-1' });
  return {
    store,
    service: new BedrockBatchService({ bedrock: client, store, bucket: 'run-bucket', roleArn: ROLE }),
  };
}

const clientError = <T>(
  Type: new (opts: { message: string; $metadata: object }) => T,
  message: string,
  httpStatusCode = 400,
) => new Type({ message, $metadata: { httpStatusCode } });

describe('BedrockBatchService.accepts', () => {
  it('takes bedrock: models only, and refuses any other spec without throwing', () => {
    // Prepare
    const { service } = serviceOver();

    // Act
    const answers = [
      'bedrock:anthropic.claude-3-haiku-20240307-v1:0',
      'bedrock-custom:arn:aws:bedrock:us-east-1:123456789012:imported-model/x#llama',
      'sagemaker:my-endpoint',
      'openai:http://localhost:8080/v1#m',
      'not a spec',
    ].map((spec) => service.accepts(spec));

    // Assess
    expect(answers).toEqual([true, false, false, false, false]);
  });
});

describe('BedrockBatchService.submit', () => {
  it('creates a Converse job with its token, bucket URIs, role and timeout, and records its ARN', async () => {
    // Prepare
    const { store, service } = serviceOver();
    bedrock.on(CreateModelInvocationJobCommand).resolves({ jobArn: ARN });
    bedrock.on(GetModelInvocationJobCommand).resolves({ status: 'Submitted' } as never);

    // Act
    const state = await service.submit(job, 'task-token-1');

    // Assess
    expect(state).toBeUndefined();
    expect(bedrock.commandCalls(CreateModelInvocationJobCommand)[0]?.args[0].input).toEqual({
      jobName: job.jobName,
      roleArn: ROLE,
      clientRequestToken: job.token,
      modelId: job.modelId,
      modelInvocationType: 'Converse',
      inputDataConfig: {
        s3InputDataConfig: { s3Uri: `s3://run-bucket/${PREFIX}input.jsonl`, s3InputFormat: 'JSONL' },
      },
      outputDataConfig: { s3OutputDataConfig: { s3Uri: `s3://run-bucket/${PREFIX}output/` } },
      timeoutDurationInHours: 72,
    });
    expect(JSON.parse(await store.get(submittedKey))).toEqual({ jobArn: ARN });
    expect(bedrock.commandCalls(GetModelInvocationJobCommand)[0]?.args[0].input).toEqual({
      jobIdentifier: ARN,
    });
  });

  it('keeps the task token before it creates the job, so the job’s end always finds it', async () => {
    // Prepare
    const { store, service } = serviceOver();
    let keptAtCreate: string | undefined;
    bedrock.on(CreateModelInvocationJobCommand).callsFake(async () => {
      keptAtCreate = await store.tryGet(batchTokenKey(job.jobName));
      return { jobArn: ARN };
    });
    bedrock.on(GetModelInvocationJobCommand).resolves({ status: 'Validating' } as never);

    // Act
    await service.submit(job, 'task-token-1');

    // Assess
    expect(JSON.parse(keptAtCreate ?? 'null')).toEqual({
      jobName: job.jobName,
      taskToken: 'task-token-1',
      runId: 'run-1',
      stage: 'respond',
    });
  });

  it('sends the same token again when a submit is retried after a lost answer, so no second job starts', async () => {
    // Prepare
    const { store, service } = serviceOver();
    bedrock
      .on(CreateModelInvocationJobCommand)
      .rejectsOnce(clientError(InternalServerException, 'connection lost after create', 500))
      .resolves({ jobArn: ARN });
    bedrock.on(GetModelInvocationJobCommand).resolves({ status: 'Scheduled' } as never);

    // Act
    const first = await service.submit(job, 'task-token-1').catch((error: Error) => error);
    const second = await service.submit(job, 'task-token-2');

    // Assess
    expect(first).toMatchObject({ name: 'ModelTransientError' });
    expect(second).toBeUndefined();
    const tokens = bedrock
      .commandCalls(CreateModelInvocationJobCommand)
      .map((call) => call.args[0].input.clientRequestToken);
    expect(tokens).toEqual([job.token, job.token]);
    expect(JSON.parse(await store.get(submittedKey))).toEqual({ jobArn: ARN });
  });

  it('creates nothing again once the job’s ARN is recorded, and the latest execution’s token wins', async () => {
    // Prepare
    const { store, service } = serviceOver();
    bedrock.on(CreateModelInvocationJobCommand).resolves({ jobArn: ARN });
    bedrock.on(GetModelInvocationJobCommand).resolves({ status: 'InProgress' } as never);
    await service.submit(job, 'task-token-1');

    // Act
    const again = await service.submit(job, 'task-token-2');

    // Assess
    expect(again).toBeUndefined();
    expect(bedrock.commandCalls(CreateModelInvocationJobCommand)).toHaveLength(1);
    expect(JSON.parse(await store.get(batchTokenKey(job.jobName)))).toMatchObject({
      taskToken: 'task-token-2',
    });
  });

  it('finds a job whose ARN record was lost by its exact name, page by page, when Bedrock reports a conflict', async () => {
    // Prepare
    const { store, service } = serviceOver();
    bedrock
      .on(CreateModelInvocationJobCommand)
      .rejects(clientError(ConflictException, 'a job with this name already exists'));
    bedrock
      .on(ListModelInvocationJobsCommand)
      .resolvesOnce({
        invocationJobSummaries: [{ jobName: `${job.jobName}-retry`, jobArn: OTHER_ARN }],
        nextToken: 'page-2',
      } as never)
      .resolves({
        invocationJobSummaries: [
          {
            jobName: job.jobName,
            jobArn: ARN,
            outputDataConfig: { s3OutputDataConfig: { s3Uri: `s3://run-bucket/${PREFIX}output/` } },
          },
        ],
      } as never);
    bedrock.on(GetModelInvocationJobCommand).resolves({ status: 'InProgress' } as never);

    // Act
    const state = await service.submit(job, 'task-token-1');

    // Assess
    expect(state).toBeUndefined();
    expect(bedrock.commandCalls(ListModelInvocationJobsCommand).map((call) => call.args[0].input)).toEqual([
      { nameContains: job.jobName, nextToken: undefined },
      { nameContains: job.jobName, nextToken: 'page-2' },
    ]);
    expect(JSON.parse(await store.get(submittedKey))).toEqual({ jobArn: ARN });
  });

  it('refuses a name taken by a job of another bucket rather than adopt that job', async () => {
    // Prepare
    const { store, service } = serviceOver();
    bedrock.on(CreateModelInvocationJobCommand).rejects(clientError(ConflictException, 'conflict'));
    bedrock.on(ListModelInvocationJobsCommand).resolves({
      invocationJobSummaries: [
        {
          jobName: job.jobName,
          jobArn: OTHER_ARN,
          outputDataConfig: { s3OutputDataConfig: { s3Uri: `s3://other-bucket/${PREFIX}output/` } },
        },
      ],
    } as never);

    // Act
    const act = service.submit(job, 'task-token-1');

    // Assess
    await expect(act).rejects.toMatchObject({
      name: 'BatchSubmitError',
      message: expect.stringContaining('s3://other-bucket/'),
    });
    expect(await store.tryGet(submittedKey)).toBeUndefined();
  });

  it('retries a conflict whose job Bedrock does not list yet as transient', async () => {
    // Prepare
    const { service } = serviceOver();
    bedrock.on(CreateModelInvocationJobCommand).rejects(clientError(ConflictException, 'conflict'));
    bedrock.on(ListModelInvocationJobsCommand).resolves({ invocationJobSummaries: [] });

    // Act
    const act = service.submit(job, 'task-token-1');

    // Assess
    await expect(act).rejects.toMatchObject({ name: 'ModelTransientError' });
  });

  it('answers at once for a job that had already ended, as its end event found no wait to release', async () => {
    // Prepare
    const { service } = serviceOver();
    bedrock.on(CreateModelInvocationJobCommand).resolves({ jobArn: ARN });
    bedrock.on(GetModelInvocationJobCommand).resolves({ status: 'Completed' } as never);

    // Act
    const state = await service.submit(job, 'task-token-1');

    // Assess
    expect(state).toEqual({ status: 'Completed', outputKey: `${PREFIX}output/${JOB_ID}/input.jsonl.out` });
  });

  it.each([
    ['a malformed request', clientError(ValidationException, 'model does not support batch inference')],
    ['no access', clientError(AccessDeniedException, 'not authorized to pass the role', 403)],
    ['an unknown model', clientError(ResourceNotFoundException, 'model not found', 404)],
    [
      'any other 4xx',
      Object.assign(new Error('bad input file'), { name: 'Odd', $metadata: { httpStatusCode: 400 } }),
    ],
  ])('refuses %s for good with BatchSubmitError naming the job and the service’s words', async (_, error) => {
    // Prepare
    const { service } = serviceOver();
    bedrock.on(CreateModelInvocationJobCommand).rejects(error);

    // Act
    const act = service.submit(job, 'task-token-1');

    // Assess
    await expect(act).rejects.toMatchObject({
      name: 'BatchSubmitError',
      message: expect.stringMatching(new RegExp(`${job.jobName}.*${error.message}`)),
    });
  });

  it.each([
    ['a throttle', clientError(ThrottlingException, 'rate exceeded', 429), 'ModelThrottledError'],
    [
      'too many jobs in flight',
      clientError(ServiceQuotaExceededException, 'job quota reached'),
      'ModelThrottledError',
    ],
    ['an internal error', clientError(InternalServerException, 'internal', 500), 'ModelTransientError'],
    [
      'a bare 503',
      Object.assign(new Error('unavailable'), { name: 'Unknown', $metadata: { httpStatusCode: 503 } }),
      'ModelTransientError',
    ],
    [
      'a reset connection',
      Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }),
      'ModelTransientError',
    ],
  ])('leaves %s to the workflow’s retry as %s', async (_, error, name) => {
    // Prepare
    const { service } = serviceOver();
    bedrock.on(CreateModelInvocationJobCommand).rejects(error);

    // Act
    const act = service.submit(job, 'task-token-1');

    // Assess
    await expect(act).rejects.toMatchObject({ name });
  });
});

describe('BedrockBatchService.state', () => {
  it('calls a job with no ARN recorded NotSubmitted without asking Bedrock', async () => {
    // Prepare
    const { service } = serviceOver();

    // Act
    const state = await service.state(job);

    // Assess
    expect(state).toEqual({ status: 'NotSubmitted' });
    expect(bedrock.calls()).toHaveLength(0);
  });

  it('gives a running job no output key', async () => {
    // Prepare
    const { store, service } = serviceOver();
    await store.put(submittedKey, JSON.stringify({ jobArn: ARN }));
    bedrock.on(GetModelInvocationJobCommand).resolves({ status: 'InProgress' } as never);

    // Act
    const state = await service.state(job);

    // Assess
    expect(state).toEqual({ status: 'InProgress' });
  });

  it.each(['Completed', 'PartiallyCompleted'])(
    'points a %s job at the .out file Bedrock writes under its job id',
    async (status) => {
      // Prepare
      const { store, service } = serviceOver();
      await store.put(submittedKey, JSON.stringify({ jobArn: ARN }));
      bedrock.on(GetModelInvocationJobCommand).resolves({ status } as never);

      // Act
      const state = await service.state(job);

      // Assess
      expect(state).toEqual({ status, outputKey: `${PREFIX}output/${JOB_ID}/input.jsonl.out` });
    },
  );

  it('passes on why a job failed, with no output key', async () => {
    // Prepare
    const { store, service } = serviceOver();
    await store.put(submittedKey, JSON.stringify({ jobArn: ARN }));
    bedrock
      .on(GetModelInvocationJobCommand)
      .resolves({ status: 'Failed', message: 'the role cannot read the input' } as never);

    // Act
    const state = await service.state(job);

    // Assess
    expect(state).toEqual({ status: 'Failed', message: 'the role cannot read the input' });
  });

  it('calls a recorded job Bedrock does not know NotSubmitted', async () => {
    // Prepare
    const { store, service } = serviceOver();
    await store.put(submittedKey, JSON.stringify({ jobArn: ARN }));
    bedrock.on(GetModelInvocationJobCommand).rejects(clientError(ResourceNotFoundException, 'no job', 404));

    // Act
    const state = await service.state(job);

    // Assess
    expect(state).toMatchObject({ status: 'NotSubmitted' });
  });

  it('leaves a throttled status read to the workflow’s retry', async () => {
    // Prepare
    const { store, service } = serviceOver();
    await store.put(submittedKey, JSON.stringify({ jobArn: ARN }));
    bedrock.on(GetModelInvocationJobCommand).rejects(clientError(ThrottlingException, 'slow down', 429));

    // Act
    const act = service.state(job);

    // Assess
    await expect(act).rejects.toMatchObject({ name: 'ModelThrottledError' });
  });
});

describe('BedrockBatchService.stop', () => {
  it('stops the recorded job', async () => {
    // Prepare
    const { store, service } = serviceOver();
    await store.put(submittedKey, JSON.stringify({ jobArn: ARN }));
    bedrock.on(StopModelInvocationJobCommand).resolves({});

    // Act
    await service.stop(job);

    // Assess
    expect(bedrock.commandCalls(StopModelInvocationJobCommand)[0]?.args[0].input).toEqual({
      jobIdentifier: ARN,
    });
  });

  it('does nothing for a job that was never submitted', async () => {
    // Prepare
    const { service } = serviceOver();

    // Act
    await service.stop(job);

    // Assess
    expect(bedrock.calls()).toHaveLength(0);
  });

  it.each([
    ['ValidationException', clientError(ValidationException, 'job is in a terminal state')],
    ['ConflictException', clientError(ConflictException, 'job already completed')],
  ])('takes a %s from a job that already ended as stopped', async (_, error) => {
    // Prepare
    const { store, service } = serviceOver();
    await store.put(submittedKey, JSON.stringify({ jobArn: ARN }));
    bedrock.on(StopModelInvocationJobCommand).rejects(error);

    // Act
    const act = service.stop(job);

    // Assess
    await expect(act).resolves.toBeUndefined();
  });

  it('leaves a throttled stop to the workflow’s retry', async () => {
    // Prepare
    const { store, service } = serviceOver();
    await store.put(submittedKey, JSON.stringify({ jobArn: ARN }));
    bedrock.on(StopModelInvocationJobCommand).rejects(clientError(ThrottlingException, 'slow down', 429));

    // Act
    const act = service.stop(job);

    // Assess
    await expect(act).rejects.toMatchObject({ name: 'ModelThrottledError' });
  });
});
