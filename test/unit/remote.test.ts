import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  NoSuchKey,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  type HistoryEvent,
  ListExecutionsCommand,
  SFNClient,
} from '@aws-sdk/client-sfn';
import { sdkStreamMixin } from '@smithy/util-stream';
import { mockClient } from 'aws-sdk-client-mock';
import { beforeEach, describe, expect, it } from 'vitest';
import { main } from '../../lib/cli/main.js';
import { ProgressRenderer } from '../../lib/cli/progress.js';
import {
  fetchRun,
  type RemoteClients,
  runIdOfEvent,
  runStatus,
  submitRun,
  UPLOAD_PART_BYTES,
} from '../../lib/cli/remote.js';
import { runLocal } from '../../lib/local/run-local.js';
import { emptyStats } from '../../lib/pipeline/ledger.js';
import { split } from '../../lib/pipeline/stages/split.js';
import { captured } from '../support/cli.js';
import { FakeModel, fakeRegistry } from '../support/fake-model.js';
import { fakeConfig, fakeDeps } from '../support/pipeline.js';
import { tempDir } from '../support/temp.js';

const s3 = mockClient(S3Client);
const sfn = mockClient(SFNClient);
const cfn = mockClient(CloudFormationClient);

const STACK = 'SaferInstruct';
const BUCKET = 'safer-instruct-bucket';
const MACHINE = 'arn:aws:states:us-east-1:123456789012:stateMachine:Pipeline';
const execution = (name: string) => `arn:aws:states:us-east-1:123456789012:execution:Pipeline:${name}`;
const OLD = execution('earlier-run');
const OURS = execution('5f1c2d3e_4a5b');
const ETAG = '0f343b0931126a20f133d67c2b018a3b';
const fixture = new URL('../fixtures/records-60.jsonl', import.meta.url).pathname;

/** Clients for the mocks, and a sleep that only notes how long it was asked to wait. */
const clients = (sleeps: number[] = []): RemoteClients => ({
  s3: new S3Client({ region: 'us-east-1' }),
  sfn: new SFNClient({ region: 'us-east-1' }),
  cfn: new CloudFormationClient({ region: 'us-east-1' }),
  sleep: async (ms) => {
    sleeps.push(ms);
    // A poll that never ends would otherwise spin without waiting.
    if (sleeps.length > 100) throw new Error('polled more than 100 times');
  },
});

/** A stderr stand-in off a terminal: progress comes as plain lines. */
const plainStream = () => {
  let text = '';
  return {
    isTTY: false,
    write(chunk: string) {
      text += chunk;
      return true;
    },
    get text() {
      return text;
    },
  };
};

const deployedStack = () =>
  cfn.on(DescribeStacksCommand, { StackName: STACK }).resolves({
    Stacks: [
      {
        StackName: STACK,
        CreationTime: new Date(),
        StackStatus: 'CREATE_COMPLETE',
        Outputs: [
          { OutputKey: 'BucketName', OutputValue: BUCKET },
          { OutputKey: 'ReverseTuningArn', OutputValue: `${MACHINE}-tuning` },
          { OutputKey: 'StateMachineArn', OutputValue: MACHINE },
        ],
      },
    ],
  });

/** The bucket: objects by key, listed `pageSize` keys a page. */
function fakeBucket(objects: Record<string, string>, pageSize = 2) {
  s3.on(GetObjectCommand).callsFake((input: { Key: string }) => {
    const text = objects[input.Key];
    if (text === undefined)
      throw new NoSuchKey({ message: 'The specified key does not exist.', $metadata: {} });
    return { Body: sdkStreamMixin(Readable.from([Buffer.from(text)])) };
  });
  s3.on(ListObjectsV2Command).callsFake((input: { Prefix?: string; ContinuationToken?: string }) => {
    const keys = Object.keys(objects)
      .filter((key) => key.startsWith(input.Prefix ?? ''))
      .sort();
    const start = Number(input.ContinuationToken ?? 0);
    const more = start + pageSize < keys.length;
    return {
      Contents: keys.slice(start, start + pageSize).map((Key) => ({ Key, Size: objects[Key]?.length })),
      IsTruncated: more,
      ...(more ? { NextContinuationToken: String(start + pageSize) } : {}),
    };
  });
}

/** The EventBridge event an upload of `key` sends, as the execution's input. */
const objectCreated = (key: string, etag = ETAG) => ({
  version: '0',
  id: '2d4eba74-fd51-3966-4bfa-b013c9da8ff1',
  'detail-type': 'Object Created' as const,
  source: 'aws.s3',
  time: '2026-01-01T00:00:00Z',
  detail: {
    version: '0',
    bucket: { name: BUCKET },
    object: { key, size: 120, etag, sequencer: '00617F08299329D189' },
  },
});

/** An execution history written event by event, each chained to the one before unless told otherwise. */
class History {
  readonly events: HistoryEvent[] = [];

  add(type: string, details: Partial<HistoryEvent> = {}, previousEventId = this.events.length): number {
    const id = this.events.length + 1;
    this.events.push({
      id,
      previousEventId,
      type: type as HistoryEvent['type'],
      timestamp: new Date(Date.parse('2026-01-01T00:00:00Z') + id * 1000),
      ...details,
    });
    return id;
  }

  task(name: string, output: unknown, previous?: number): number {
    let id = this.add('TaskStateEntered', { stateEnteredEventDetails: { name } }, previous);
    id = this.add('TaskScheduled', {}, id);
    id = this.add('TaskStarted', {}, id);
    id = this.add('TaskSucceeded', {}, id);
    return this.add(
      'TaskStateExited',
      { stateExitedEventDetails: { name, output: JSON.stringify(output) } },
      id,
    );
  }

  failedTask(name: string, error: string, cause: string, previous?: number): number {
    let id = this.add('TaskStateEntered', { stateEnteredEventDetails: { name } }, previous);
    id = this.add('TaskScheduled', {}, id);
    id = this.add('TaskStarted', {}, id);
    return this.add(
      'TaskFailed',
      { taskFailedEventDetails: { resourceType: 'lambda', resource: 'invoke', error, cause } },
      id,
    );
  }

  map(name: string, length: number): number {
    const id = this.add('MapStateEntered', { stateEnteredEventDetails: { name } });
    return this.add('MapStateStarted', { mapStateStartedEventDetails: { length } }, id);
  }

  iteration(map: string, index: number, previous: number, body: (start: number) => number): void {
    const start = this.add(
      'MapIterationStarted',
      { mapIterationStartedEventDetails: { name: map, index } },
      previous,
    );
    this.add(
      'MapIterationSucceeded',
      { mapIterationSucceededEventDetails: { name: map, index } },
      body(start),
    );
  }
}

const lambdaCause = (errorType: string, errorMessage: string) =>
  JSON.stringify({ errorType, errorMessage, trace: [`${errorType}: ${errorMessage}`, '    at split'] });

/**
 * A run of two shards: shard 00001 fails in Induce (its Catch records it), shard 00000 goes through the
 * judge stages to Merge. Returns how many events there were when the first shard's Induce had finished.
 */
function successfulRun(h: History, runId: string): number {
  h.add('ExecutionStarted', {}, 0);
  h.task('Split', { runId, duplicate: false, shards: ['00000', '00001'], records: 42 });
  h.add('ChoiceStateEntered', { stateEnteredEventDetails: { name: 'DuplicateEvent?' } });
  h.add('ChoiceStateExited', { stateExitedEventDetails: { name: 'DuplicateEvent?' } });
  h.task('DedupTexts', { runId, texts: { shards: ['00000', '00001'], records: 40 } });
  const induce = h.map('InduceShards', 2);
  let running = 0;
  h.iteration('InduceShards', 0, induce, (start) => {
    const id = h.task('Induce', { runId, shard: '00000', records: 20 }, start);
    running = h.events.length;
    return id;
  });
  h.iteration('InduceShards', 1, induce, (start) => {
    const failed = h.failedTask(
      'Induce',
      'ModelRequestError',
      lambdaCause('ModelRequestError', 'bad request'),
      start,
    );
    const caught = h.add(
      'PassStateEntered',
      { stateEnteredEventDetails: { name: 'InduceShardFailed' } },
      failed,
    );
    return h.add('PassStateExited', { stateExitedEventDetails: { name: 'InduceShardFailed' } }, caught);
  });
  h.add('MapStateSucceeded');
  h.add('MapStateExited', { stateExitedEventDetails: { name: 'InduceShards' } });
  h.task('DedupInstructions', { runId, instructions: { shards: ['00000'], records: 20 } });
  const judge = h.map('JudgeShards', 1);
  h.iteration('JudgeShards', 0, judge, (start) => {
    const filter = h.task('Filter', { runId, shard: '00000', records: 19 }, start);
    const respond = h.task('Respond', { runId, shard: '00000', records: 19 }, filter);
    return h.task('Evaluate', { runId, shard: '00000', records: 18 }, respond);
  });
  h.add('MapStateSucceeded');
  h.add('MapStateExited', { stateExitedEventDetails: { name: 'JudgeShards' } });
  const merged = {
    runId,
    pairs: 18,
    rejects: 24,
    pairsKey: `runs/${runId}/output/pairs.jsonl`,
    rejectsKey: `runs/${runId}/output/rejects.jsonl`,
    reportKey: `runs/${runId}/output/report.json`,
    exportKeys: [],
  };
  h.task('Merge', merged);
  h.add('ExecutionSucceeded', { executionSucceededEventDetails: { output: JSON.stringify(merged) } });
  return running;
}

/**
 * Serves each execution's history as GetExecutionHistory does, newest first when asked, seven events a
 * page; the n-th read of an execution sees the events up to its n-th cut, and all of them after the last
 * cut (the history grows as it runs).
 */
function serveHistories(histories: Record<string, { events: HistoryEvent[]; cuts?: number[] }>) {
  const reads = new Map<string, number>();
  sfn
    .on(GetExecutionHistoryCommand)
    .callsFake((input: { executionArn: string; reverseOrder?: boolean; nextToken?: string }) => {
      const history = histories[input.executionArn];
      if (!history) throw new Error(`no history for ${input.executionArn}`);
      const read = input.nextToken
        ? (reads.get(input.executionArn) ?? 1) - 1
        : (reads.get(input.executionArn) ?? 0);
      if (!input.nextToken) reads.set(input.executionArn, read + 1);
      const cut = history.cuts?.[read] ?? history.events.length;
      const visible = history.events.slice(0, cut);
      const ordered = input.reverseOrder ? [...visible].reverse() : visible;
      const start = Number(input.nextToken ?? 0);
      const more = start + 7 < ordered.length;
      return { events: ordered.slice(start, start + 7), ...(more ? { nextToken: String(start + 7) } : {}) };
    });
}

const stats = (figures: Partial<ReturnType<typeof emptyStats>>) =>
  JSON.stringify({ ...emptyStats(), ...figures });

/** An input file of `bytes` bytes. */
const inputFile = (name: string, bytes?: number) => {
  const path = join(tempDir(), name);
  writeFileSync(path, bytes === undefined ? '{"text":"hello there"}\n' : Buffer.alloc(bytes, 'a'));
  return path;
};

beforeEach(() => {
  s3.reset();
  sfn.reset();
  cfn.reset();
  deployedStack();
});

describe('runIdOfEvent', () => {
  it("names the run as split does for the upload's S3 event", async () => {
    // Prepare
    const { deps } = fakeDeps();
    const body = '{"text":"hello there"}\n';
    await deps.store.put('incoming/posts.jsonl', body);
    const etag = (await deps.store.head('incoming/posts.jsonl'))?.etag as string;
    const event = objectCreated('incoming/posts.jsonl', etag);

    // Act
    const result = await split({ event, executionId: OURS, config: deps.config }, deps);

    // Assess
    expect(runIdOfEvent(event)).toBe(result.runId);
  });
});

describe('submitRun', () => {
  it('uploads the input, finds the execution its event started among new ones, and follows it to success', async () => {
    // Prepare
    const event = objectCreated('incoming/posts.jsonl');
    const runId = runIdOfEvent(event);
    s3.on(PutObjectCommand).resolves({ ETag: `"${ETAG}"` });
    fakeBucket({
      [`runs/${runId}/shards/00000/induce.stats.json`]: stats({ in: 20, out: 20, calls: 20, costUsd: 0.01 }),
      [`runs/${runId}/shards/00000/filter.stats.json`]: stats({ in: 20, out: 19, calls: 20, costUsd: 0.02 }),
    });
    const other = execution('someone-elses-upload');
    sfn
      .on(ListExecutionsCommand)
      .resolvesOnce({
        executions: [
          {
            executionArn: OLD,
            stateMachineArn: MACHINE,
            name: 'earlier-run',
            status: 'SUCCEEDED',
            startDate: new Date(),
          },
        ],
      })
      .resolvesOnce({
        executions: [
          {
            executionArn: OLD,
            stateMachineArn: MACHINE,
            name: 'earlier-run',
            status: 'SUCCEEDED',
            startDate: new Date(),
          },
        ],
      })
      .resolves({
        executions: [
          {
            executionArn: OURS,
            stateMachineArn: MACHINE,
            name: '5f1c2d3e_4a5b',
            status: 'RUNNING',
            startDate: new Date(),
          },
          {
            executionArn: other,
            stateMachineArn: MACHINE,
            name: 'other',
            status: 'RUNNING',
            startDate: new Date(),
          },
          {
            executionArn: OLD,
            stateMachineArn: MACHINE,
            name: 'earlier-run',
            status: 'SUCCEEDED',
            startDate: new Date(),
          },
        ],
      });
    sfn
      .on(DescribeExecutionCommand, { executionArn: other })
      .resolves({ status: 'RUNNING', input: JSON.stringify(objectCreated('incoming/other.jsonl')) });
    sfn
      .on(DescribeExecutionCommand, { executionArn: OURS })
      .resolves({ status: 'RUNNING', input: JSON.stringify(event) });
    const history = new History();
    const running = successfulRun(history, runId);
    serveHistories({ [OURS]: { events: history.events, cuts: [running] } });
    const sleeps: number[] = [];
    const stderr = plainStream();

    // Act
    const outcome = await submitRun(
      { input: inputFile('posts.jsonl'), stack: STACK, progress: new ProgressRenderer(stderr) },
      clients(sleeps),
    );

    // Assess
    expect(outcome).toEqual({
      runId,
      executionArn: OURS,
      status: 'SUCCEEDED',
      pairs: 18,
      rejects: 24,
      outputs: `s3://${BUCKET}/runs/${runId}/output/`,
    });
    expect(s3.commandCalls(PutObjectCommand)[0]?.args[0].input).toMatchObject({
      Bucket: BUCKET,
      Key: 'incoming/posts.jsonl',
    });
    expect(sfn.commandCalls(DescribeExecutionCommand).map((c) => c.args[0].input.executionArn)).not.toContain(
      OLD,
    );
    // Not found at the first look: a second after the upload it is there; then one poll while it runs.
    expect(sleeps).toEqual([1000, 5000]);
    expect(stderr.text).toContain(`execution ${OURS}\n`);
    expect(stderr.text).toContain('split     2/2 shards, 42 records\n');
    expect(stderr.text).toMatch(
      /^induce {4}1\/2 shards, 20\/40 records, 20 kept, 20 calls, [\d.]+ records\/s, \$0\.0100$/m,
    );
    expect(stderr.text).toMatch(/^induce {4}1\/2 shards \(1 failed\), 20\/40 records, 20 kept/m);
    expect(stderr.text).toMatch(/^filter {4}1\/1 shards, 20\/20 records, 19 kept, 20 calls, .*\$0\.0200$/m);
    expect(stderr.text).toMatch(/^merge {5}18 pairs, 24 rejects$/m);
  });

  it('reports a failed execution with its error, its cause in one line, and the task that failed', async () => {
    // Prepare
    const event = objectCreated('incoming/posts.jsonl');
    s3.on(PutObjectCommand).resolves({ ETag: `"${ETAG}"` });
    fakeBucket({});
    sfn
      .on(ListExecutionsCommand)
      .resolvesOnce({ executions: [] })
      .resolves({
        executions: [
          {
            executionArn: OURS,
            stateMachineArn: MACHINE,
            name: 'x',
            status: 'RUNNING',
            startDate: new Date(),
          },
        ],
      });
    sfn.on(DescribeExecutionCommand).resolves({ status: 'RUNNING', input: JSON.stringify(event) });
    const h = new History();
    h.add('ExecutionStarted', {}, 0);
    h.task('Split', { runId: runIdOfEvent(event), duplicate: false, shards: ['00000'], records: 1 });
    h.task('DedupTexts', { texts: { shards: ['00000'], records: 1 } });
    h.map('InduceShards', 1);
    const failed = h.failedTask(
      'Induce',
      'ModelConfigError',
      lambdaCause(
        'ModelConfigError',
        'no access to anthropic.claude-3-haiku-20240307-v1:0: enable it in the Bedrock console',
      ),
    );
    h.add('FailStateEntered', { stateEnteredEventDetails: { name: 'InduceModelUnusable' } }, failed);
    h.add('ExecutionFailed', {
      executionFailedEventDetails: {
        error: 'ModelConfigError',
        cause: 'A stage cannot use its configured model; the failed task names the model and the problem.',
      },
    });
    serveHistories({ [OURS]: { events: h.events } });

    // Act
    const outcome = await submitRun({ input: inputFile('posts.jsonl'), stack: STACK }, clients());

    // Assess
    expect(outcome).toMatchObject({
      status: 'FAILED',
      error: 'ModelConfigError',
      cause: 'A stage cannot use its configured model; the failed task names the model and the problem.',
      failedTask:
        'Induce: ModelConfigError: no access to anthropic.claude-3-haiku-20240307-v1:0: enable it in the Bedrock console',
    });
  });

  it('exits non-zero and shows the cause when the execution fails, with the run id on stdout', async () => {
    // Prepare
    const event = objectCreated('incoming/posts.jsonl');
    s3.on(PutObjectCommand).resolves({ ETag: `"${ETAG}"` });
    fakeBucket({});
    sfn
      .on(ListExecutionsCommand)
      .resolvesOnce({ executions: [] })
      .resolves({
        executions: [
          {
            executionArn: OURS,
            stateMachineArn: MACHINE,
            name: 'x',
            status: 'FAILED',
            startDate: new Date(),
          },
        ],
      });
    sfn.on(DescribeExecutionCommand).resolves({ status: 'FAILED', input: JSON.stringify(event) });
    const cause = lambdaCause(
      'InputError',
      'incoming/posts.jsonl: the input holds no records; expected JSON Lines',
    );
    const h = new History();
    h.add('ExecutionStarted', {}, 0);
    h.failedTask('Split', 'InputError', cause);
    h.add('ExecutionFailed', { executionFailedEventDetails: { error: 'InputError', cause } });
    serveHistories({ [OURS]: { events: h.events } });

    // Act
    const result = await captured(main, [
      'submit',
      inputFile('posts.jsonl'),
      '--stack',
      STACK,
      '--region',
      'us-east-1',
    ]);

    // Assess
    expect(result.code).toBe(1);
    expect(result.out).toBe(`${runIdOfEvent(event)}\n`);
    expect(result.err).toContain(
      'status    FAILED: InputError: incoming/posts.jsonl: the input holds no records; expected JSON Lines\n',
    );
    expect(result.err).not.toContain('failed    Split');
  });

  it('says how long it waited, and what to check, when no execution appears for the upload', async () => {
    // Prepare
    s3.on(PutObjectCommand).resolves({ ETag: `"${ETAG}"` });
    sfn.on(ListExecutionsCommand).resolves({
      executions: [
        {
          executionArn: OLD,
          stateMachineArn: MACHINE,
          name: 'earlier-run',
          status: 'SUCCEEDED',
          startDate: new Date(),
        },
      ],
    });
    const sleeps: number[] = [];

    // Act
    const act = submitRun(
      { input: inputFile('posts.jsonl'), stack: STACK, appearTimeoutMs: 5000 },
      clients(sleeps),
    );

    // Assess
    await expect(act).rejects.toThrow(
      new RegExp(
        `no execution of ${MACHINE} started for s3://${BUCKET}/incoming/posts\\.jsonl \\(ETag ${ETAG}\\) within 5 s; .*InputUploaded rule`,
      ),
    );
    expect(sleeps).toEqual([1000, 2000, 2000]);
    expect(sfn.commandCalls(DescribeExecutionCommand)).toHaveLength(0);
  });

  it('uploads an input above the part size in 8 MiB parts, and returns at once without --follow', async () => {
    // Prepare
    const multipartEtag = `${ETAG}-2`;
    s3.on(CreateMultipartUploadCommand).resolves({ UploadId: 'upload-1' });
    s3.on(UploadPartCommand).callsFake((input: { PartNumber: number }) => ({
      ETag: `"part-${input.PartNumber}"`,
    }));
    s3.on(CompleteMultipartUploadCommand).resolves({ ETag: `"${multipartEtag}"`, Location: 'x' });
    sfn
      .on(ListExecutionsCommand)
      .resolvesOnce({ executions: [] })
      .resolves({
        executions: [
          {
            executionArn: OURS,
            stateMachineArn: MACHINE,
            name: 'x',
            status: 'RUNNING',
            startDate: new Date(),
          },
        ],
      });
    const event = objectCreated('incoming/big.jsonl', multipartEtag);
    sfn.on(DescribeExecutionCommand).resolves({ status: 'RUNNING', input: JSON.stringify(event) });

    // Act
    const outcome = await submitRun(
      { input: inputFile('big.jsonl', UPLOAD_PART_BYTES + 1024 * 1024), stack: STACK, follow: false },
      clients(),
    );

    // Assess
    const parts = s3.commandCalls(UploadPartCommand).map((c) => c.args[0].input);
    expect(parts.map((p) => [p.PartNumber, (p.Body as Uint8Array).byteLength])).toEqual([
      [1, UPLOAD_PART_BYTES],
      [2, 1024 * 1024],
    ]);
    expect(s3.commandCalls(PutObjectCommand)).toHaveLength(0);
    expect(s3.commandCalls(CompleteMultipartUploadCommand)[0]?.args[0].input).toMatchObject({
      Bucket: BUCKET,
      Key: 'incoming/big.jsonl',
      UploadId: 'upload-1',
    });
    expect(outcome).toEqual({
      runId: runIdOfEvent(event),
      executionArn: OURS,
      status: 'RUNNING',
      outputs: `s3://${BUCKET}/runs/${runIdOfEvent(event)}/output/`,
    });
    expect(sfn.commandCalls(GetExecutionHistoryCommand)).toHaveLength(0);
  });

  it('follows the execution that claimed the run when its own was a second delivery of the event', async () => {
    // Prepare
    const event = objectCreated('incoming/posts.jsonl');
    const runId = runIdOfEvent(event);
    const first = execution('first-delivery');
    s3.on(PutObjectCommand).resolves({ ETag: `"${ETAG}"` });
    fakeBucket({
      [`runs/${runId}/run.json`]: JSON.stringify({
        executionId: first,
        inputKey: 'incoming/posts.jsonl',
        etag: ETAG,
      }),
    });
    sfn
      .on(ListExecutionsCommand)
      .resolvesOnce({ executions: [] })
      .resolves({
        executions: [
          {
            executionArn: OURS,
            stateMachineArn: MACHINE,
            name: 'x',
            status: 'SUCCEEDED',
            startDate: new Date(),
          },
        ],
      });
    sfn.on(DescribeExecutionCommand).resolves({ status: 'SUCCEEDED', input: JSON.stringify(event) });
    const duplicate = new History();
    duplicate.add('ExecutionStarted', {}, 0);
    const output = { runId, duplicate: true, shards: [], records: 0 };
    duplicate.task('Split', output);
    duplicate.add('ExecutionSucceeded', {
      executionSucceededEventDetails: { output: JSON.stringify(output) },
    });
    const claimed = new History();
    successfulRun(claimed, runId);
    serveHistories({ [OURS]: { events: duplicate.events }, [first]: { events: claimed.events } });
    const stderr = plainStream();

    // Act
    const outcome = await submitRun(
      { input: inputFile('posts.jsonl'), stack: STACK, progress: new ProgressRenderer(stderr) },
      clients(),
    );

    // Assess
    expect(outcome).toMatchObject({ runId, executionArn: first, status: 'SUCCEEDED', pairs: 18 });
    expect(stderr.text).toContain(`execution ${OURS} was a second delivery of the event; following ${first}`);
  });

  it('names a stack that is not deployed', async () => {
    cfn
      .on(DescribeStacksCommand, { StackName: 'Nope' })
      .rejects(Object.assign(new Error('Stack with id Nope does not exist'), { name: 'ValidationError' }));

    const act = submitRun({ input: inputFile('posts.jsonl'), stack: 'Nope' }, clients());

    await expect(act).rejects.toThrow(/stack Nope does not exist in this account and region/);
  });
});

describe('runStatus', () => {
  it('reads a local run folder stage by stage, from the report once merged and from shard stats before', async () => {
    // Prepare
    const outDir = tempDir();
    const result = await runLocal({
      input: fixture,
      outDir,
      config: fakeConfig({ shardSize: 10, quality: { lengths: { rejected: { max: 2000 } } } }),
      registry: fakeRegistry(new FakeModel()),
      retryIntervalMs: 0,
    });

    // Act
    const merged = await runStatus({ runId: result.runId, out: outDir });
    rmSync(join(outDir, 'store', 'runs', result.runId, 'output', 'report.json'));
    const unmerged = await runStatus({ runId: result.runId, out: outDir });

    // Assess
    expect(merged).toMatchObject({ state: 'succeeded', pairs: 56, calls: 224 });
    expect(unmerged).toMatchObject({ state: 'incomplete', calls: 224 });
    for (const status of [merged, unmerged]) {
      const stage = (name: string) => status.stages.find((s) => s.stage === name);
      expect(stage('split')).toMatchObject({
        shards: { done: 6, total: 6 },
        records: { done: 62 },
        kept: 57,
      });
      expect(stage('dedup-texts')).toMatchObject({
        shards: { done: 6, total: 6 },
        records: { done: 57, total: 57 },
        kept: 56,
      });
      expect(stage('induce')).toMatchObject({
        shards: { done: 6, total: 6 },
        records: { done: 56, total: 56 },
        kept: 56,
        calls: 56,
      });
      expect(stage('evaluate')).toMatchObject({ shards: { done: 6, total: 6 }, kept: 56, calls: 56 });
    }
    expect(merged.stages.at(-1)).toEqual({ stage: 'merge', note: `56 pairs, ${62 - 56} rejects` });
  });

  it('reads a run in the stack: its files in the bucket, listed page by page, and its execution running', async () => {
    // Prepare
    const runId = 'posts-0123456789';
    fakeBucket({
      [`runs/${runId}/run.json`]: JSON.stringify({
        executionId: OURS,
        inputKey: 'incoming/posts.jsonl',
        etag: ETAG,
      }),
      [`runs/${runId}/manifest.json`]: JSON.stringify({
        runId,
        executionId: OURS,
        inputKey: 'incoming/posts.jsonl',
        etag: ETAG,
        startedAt: '2026-01-01T00:00:00Z',
        shards: [
          { shard: '00000', records: 20 },
          { shard: '00001', records: 22 },
        ],
        records: 42,
        rejected: 0,
      }),
      [`runs/${runId}/split.stats.json`]: stats({ in: 42, out: 42 }),
      [`runs/${runId}/shards/00000/dedup-texts.stats.json`]: stats({ in: 20, out: 19 }),
      [`runs/${runId}/shards/00001/dedup-texts.stats.json`]: stats({ in: 22, out: 21 }),
      [`runs/${runId}/shards/00000/induce.jsonl`]: '{}\n',
      [`runs/${runId}/shards/00000/induce.stats.json`]: stats({
        in: 19,
        out: 19,
        calls: 19,
        costUsd: 0.0123,
      }),
    });
    sfn.on(DescribeExecutionCommand, { executionArn: OURS }).resolves({ status: 'RUNNING' });

    // Act
    const status = await runStatus({ runId, stack: STACK }, clients());

    // Assess
    expect(status).toMatchObject({
      state: 'running',
      where: `s3://${BUCKET}/runs/${runId}/`,
      execution: { arn: OURS, status: 'RUNNING' },
      calls: 19,
      costUsd: 0.0123,
    });
    expect(status.stages).toEqual([
      { stage: 'split', shards: { done: 2, total: 2 }, records: { done: 42 }, kept: 42 },
      {
        stage: 'dedup-texts',
        shards: { done: 2, total: 2 },
        records: { done: 42, total: 42 },
        kept: 40,
        calls: 0,
        costUsd: 0,
      },
      {
        stage: 'induce',
        shards: { done: 1, total: 2 },
        records: { done: 19, total: 40 },
        kept: 19,
        calls: 19,
        costUsd: 0.0123,
      },
    ]);
    expect(s3.commandCalls(ListObjectsV2Command).length).toBeGreaterThan(1);
  });

  it('prints a failed run in the stack with the cause of its execution', async () => {
    const runId = 'posts-0123456789';
    fakeBucket({
      [`runs/${runId}/run.json`]: JSON.stringify({
        executionId: OURS,
        inputKey: 'incoming/posts.jsonl',
        etag: ETAG,
      }),
    });
    sfn.on(DescribeExecutionCommand).resolves({
      status: 'FAILED',
      error: 'AccountingError',
      cause: lambdaCause('AccountingError', `run ${runId}: record r-1 is counted twice`),
    });

    const result = await captured(main, ['status', runId, '--stack', STACK]);

    expect(result.code).toBe(0);
    expect(result.out).toContain(
      `state     failed (execution ${OURS}: FAILED: AccountingError: run ${runId}: record r-1 is counted twice)\n`,
    );
    expect(result.out).toContain('total     0 calls, $0.0000\n');
  });

  it('names a run that is not there', async () => {
    fakeBucket({});

    await expect(runStatus({ runId: 'nope-0123456789', stack: STACK }, clients())).rejects.toThrow(
      `no run nope-0123456789 at s3://${BUCKET}/runs/nope-0123456789/`,
    );
  });
});

describe('fetchRun', () => {
  it("downloads every object of the run's output, over several pages of the listing", async () => {
    // Prepare
    const runId = 'posts-0123456789';
    fakeBucket({
      [`runs/${runId}/output/pairs.jsonl`]: '{"id":"a"}\n',
      [`runs/${runId}/output/rejects.jsonl`]: '{"id":"b"}\n',
      [`runs/${runId}/output/report.json`]: '{"pairs":1}',
      [`runs/${runId}/output/dpo.jsonl`]: '{"prompt":"p"}\n',
      [`runs/${runId}/output/README.md`]: '# card\n',
      [`runs/${runId}/shards/00000/induce.jsonl`]: 'not an output\n',
      'runs/other-run/output/pairs.jsonl': 'another run\n',
    });
    const out = tempDir();

    // Act
    const files = await fetchRun({ runId, stack: STACK, out }, clients());

    // Assess
    expect(files.map((f) => f.slice(out.length + 1)).sort()).toEqual([
      'README.md',
      'dpo.jsonl',
      'pairs.jsonl',
      'rejects.jsonl',
      'report.json',
    ]);
    expect(readFileSync(join(out, 'pairs.jsonl'), 'utf8')).toBe('{"id":"a"}\n');
    expect(readFileSync(join(out, 'report.json'), 'utf8')).toBe('{"pairs":1}');
    const listings = s3.commandCalls(ListObjectsV2Command).map((c) => c.args[0].input);
    expect(listings).toHaveLength(3);
    expect(listings.map((l) => [l.Prefix, l.ContinuationToken])).toEqual([
      [`runs/${runId}/output/`, undefined],
      [`runs/${runId}/output/`, '2'],
      [`runs/${runId}/output/`, '4'],
    ]);
  });

  it("keeps a project's own README.md and writes the run's dataset card beside it", async () => {
    // Prepare
    const runId = 'posts-0123456789';
    fakeBucket({ [`runs/${runId}/output/README.md`]: '# card\n' });
    const out = tempDir();
    writeFileSync(join(out, 'README.md'), '# my project\n');

    // Act
    const files = await fetchRun({ runId, stack: STACK, out }, clients());

    // Assess
    expect(files).toEqual([join(out, 'dataset-card.md')]);
    expect(readFileSync(join(out, 'README.md'), 'utf8')).toBe('# my project\n');
    expect(readFileSync(join(out, 'dataset-card.md'), 'utf8')).toBe('# card\n');
  });

  it('says the run may still be running when it has no outputs yet', async () => {
    fakeBucket({});

    const result = await captured(main, ['fetch', 'posts-0123456789', '--stack', STACK, '--out', tempDir()]);

    expect(result.code).toBe(1);
    expect(result.err).toMatch(
      /has no outputs at s3:\/\/safer-instruct-bucket\/runs\/posts-0123456789\/output\/; it may still be running: safer-instruct status posts-0123456789 --stack SaferInstruct/,
    );
  });
});
