import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { type CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  type HistoryEvent,
  ListExecutionsCommand,
  type SFNClient,
} from '@aws-sdk/client-sfn';
import { Upload } from '@aws-sdk/lib-storage';
import type { z } from 'zod';
import { exportPath } from '../local/run-local.js';
import { InputError } from '../pipeline/errors.js';
import {
  INCOMING_PREFIX,
  manifestKey,
  markerKey,
  outputKey,
  runPrefix,
  splitStatsKey,
} from '../pipeline/keys.js';
import { runIdFor } from '../pipeline/records.js';
import {
  Manifest,
  MergeResult,
  RunMarker,
  S3ObjectCreatedEvent,
  SHARD_STAGES,
  type ShardStage,
  StageStats,
} from '../pipeline/schemas.js';
import { FsStore } from '../pipeline/store/fs-store.js';
import { S3Store } from '../pipeline/store/s3-store.js';
import { formatStage, type ProgressRenderer, type StageProgress } from './progress.js';

/** The clients the remote commands use, and how they wait between polls (tests pass one that does not). */
export interface RemoteClients {
  readonly s3: S3Client;
  readonly sfn: SFNClient;
  readonly cfn: CloudFormationClient;
  /** @default a real timer */
  readonly sleep?: (ms: number) => Promise<void>;
}

/** A deployed stack that cannot serve, an execution that never started, a run without outputs. */
export class RemoteRunError extends Error {
  override name = 'RemoteRunError';
}

/** Multipart parts: 8 MiB, four in flight; lib-storage sends smaller inputs with one PutObject. */
export const UPLOAD_PART_BYTES = 8 * 1024 * 1024;
const UPLOAD_QUEUE = 4;

/** The deployed stack's bucket and pipeline, from its CloudFormation outputs. */
export interface StackResources {
  readonly bucket: string;
  readonly stateMachineArn: string;
}

/** Reads the `BucketName` and `StateMachineArn` outputs of a deployed PipelineStack. */
export async function stackResources(cfn: CloudFormationClient, stack: string): Promise<StackResources> {
  const described = await cfn
    .send(new DescribeStacksCommand({ StackName: stack }))
    .catch((error: unknown) => {
      // CloudFormation says a missing stack with a ValidationError.
      if (/does not exist/.test(String((error as Error).message)))
        throw new RemoteRunError(
          `stack ${stack} does not exist in this account and region (deploy it, or pass --region)`,
          { cause: error },
        );
      throw error;
    });
  const outputs = new Map(
    (described.Stacks?.[0]?.Outputs ?? []).map((o) => [o.OutputKey ?? '', o.OutputValue ?? '']),
  );
  const output = (key: string) => {
    const value = outputs.get(key);
    if (!value)
      throw new RemoteRunError(
        `stack ${stack} has no ${key} output; deploy the current version (npx cdk deploy)`,
      );
    return value;
  };
  return { bucket: output('BucketName'), stateMachineArn: output('StateMachineArn') };
}

type ObjectCreated = z.infer<typeof S3ObjectCreatedEvent>;

/**
 * The run id split gives the run an S3 event starts: from the object's key, its ETag and the change
 * (version and sequencer) the event reports, so a re-upload of the same bytes is a run of its own.
 */
export function runIdOfEvent(event: ObjectCreated, key = event.detail.object.key): string {
  const { etag, sequencer, 'version-id': version } = event.detail.object;
  const change = [version, sequencer].filter(Boolean).join('/');
  return runIdFor(key, change ? `${etag ?? ''}/${change}` : (etag ?? null));
}

/** An S3 event key as stored: event keys may arrive URL-encoded, with spaces as '+'. */
const decodedKey = (key: string) => {
  try {
    return decodeURIComponent(key.replace(/\+/g, ' '));
  } catch {
    return key;
  }
};

const unquoted = (etag: string) => etag.replace(/^"|"$/g, '');

/** Where a run's files are: a bucket, or a local run folder's store; keys are the same in both. */
export interface RunFiles {
  /** Where a key lives, for messages: `s3://bucket/` or the store folder. */
  readonly where: string;
  get(key: string): Promise<string | undefined>;
  /** Every key under a prefix. */
  list(prefix: string): Promise<string[]>;
}

/** A run's files in the stack's bucket. */
export function s3RunFiles(s3: S3Client, bucket: string): RunFiles {
  const store = new S3Store(s3, bucket);
  return {
    where: `s3://${bucket}/`,
    get: (key) => store.tryGet(key),
    list: async (prefix) => {
      const keys: string[] = [];
      for await (const object of listObjects(s3, bucket, prefix)) keys.push(object.key);
      return keys;
    },
  };
}

/** A run's files in the store of a local run folder (`<out>/store`). */
export function localRunFiles(storeDir: string): RunFiles {
  const store = new FsStore(storeDir);
  return {
    where: `${store.root}${sep}`,
    get: (key) => store.tryGet(key),
    list: async (prefix) => {
      const dir = store.pathOf(prefix);
      const names = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
      return names.map((name) => `${prefix.replace(/\/$/, '')}/${name.split(sep).join('/')}`);
    },
  };
}

async function* listObjects(s3: S3Client, bucket: string, prefix: string) {
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const object of page.Contents ?? [])
      if (object.Key) yield { key: object.Key, size: object.Size ?? 0 };
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
}

/** What the stats files of one shard stage add up to. */
export interface StageTally {
  shards: number;
  in: number;
  out: number;
  calls: number;
  costUsd: number;
}

const STATS_KEY = /\/shards\/(\d{5})\/([a-z-]+)\.stats\.json$/;

/**
 * Adds up the stats each shard stage writes last, when it finishes a shard. Remembers the files it read,
 * so following a run reads each once.
 */
export class ShardStatsReader {
  readonly #read = new Map<string, { stage: ShardStage; stats: StageStats }>();

  constructor(
    private readonly files: RunFiles,
    private readonly runId: string,
  ) {}

  async tally(): Promise<Map<ShardStage, StageTally>> {
    const keys = await this.files.list(`${runPrefix(this.runId)}/shards/`);
    for (const key of keys) {
      const match = STATS_KEY.exec(key);
      const stage = SHARD_STAGES.find((s) => s === match?.[2]);
      if (!stage || this.#read.has(key)) continue;
      const text = await this.files.get(key);
      const parsed = text === undefined ? undefined : StageStats.safeParse(JSON.parse(text));
      if (parsed?.success) this.#read.set(key, { stage, stats: parsed.data });
    }
    const tallies = new Map<ShardStage, StageTally>();
    for (const { stage, stats } of this.#read.values()) {
      const t = tallies.get(stage) ?? { shards: 0, in: 0, out: 0, calls: 0, costUsd: 0 };
      t.shards++;
      t.in += stats.in;
      t.out += stats.out;
      t.calls += stats.calls;
      t.costUsd += stats.costUsd;
      tallies.set(stage, t);
    }
    return tallies;
  }
}

/** The stages as a run goes through them; a batch step comes before its model stage. */
const STAGE_ORDER = [
  'split',
  'dedup-texts',
  'batch-induce',
  'induce',
  'dedup-instructions',
  'batch-filter',
  'filter',
  'batch-respond',
  'respond',
  'batch-evaluate',
  'evaluate',
  'merge',
] as const;

/** The stage whose kept records a stage takes in. */
const INPUT_OF: Readonly<Record<string, string>> = {
  'dedup-texts': 'split',
  induce: 'dedup-texts',
  'dedup-instructions': 'induce',
  filter: 'dedup-instructions',
  respond: 'filter',
  evaluate: 'respond',
};

/** The pipeline's task states (lib/infra/pipeline-state-machine.ts), by stage. */
const TASK_STAGES: Readonly<Record<string, string>> = {
  Split: 'split',
  DedupTexts: 'dedup-texts',
  Induce: 'induce',
  DedupInstructions: 'dedup-instructions',
  Filter: 'filter',
  Respond: 'respond',
  Evaluate: 'evaluate',
  Merge: 'merge',
};
/** One pass over all shards, not a Map. */
const SINGLE_STEP = new Set(['split', 'dedup-texts', 'dedup-instructions', 'merge']);
/** Batch mode's steps: PlanInduce, SubmitInduceJob, JoinInduceJob, inside the InduceJobs Map. */
const BATCH_STATE = /^(Plan|Submit|Join)(Induce|Filter|Respond|Evaluate)(?:Job)?$/;
/** The Map each shard stage runs in: its own (batch mode), or JudgeShards for the three judge stages. */
const MAPS_OF: Readonly<Record<string, readonly string[]>> = {
  induce: ['InduceShards'],
  filter: ['FilterShards', 'JudgeShards'],
  respond: ['RespondShards', 'JudgeShards'],
  evaluate: ['EvaluateShards', 'JudgeShards'],
};

interface StateTally {
  entered: number;
  done: number;
  failed: number;
  kept: number;
  firstAt?: number;
  lastAt?: number;
}

/** How an execution ended. */
export interface ExecutionEnd {
  readonly status: 'SUCCEEDED' | 'FAILED' | 'TIMED_OUT' | 'ABORTED';
  readonly error?: string;
  readonly cause?: string;
  readonly output?: unknown;
}

const FAILED_TASK = new Set(['TaskFailed', 'TaskTimedOut', 'LambdaFunctionFailed', 'LambdaFunctionTimedOut']);

const parseJson = (text: string | undefined): unknown => {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
};

/** A Lambda error's cause is its JSON error object: its type and message say it in one line. */
export function causeOf(cause: string | undefined): string | undefined {
  if (!cause) return undefined;
  const lambda = parseJson(cause) as { errorType?: unknown; errorMessage?: unknown } | undefined;
  const line =
    typeof lambda?.errorMessage === 'string'
      ? `${typeof lambda.errorType === 'string' ? `${lambda.errorType}: ` : ''}${lambda.errorMessage}`
      : cause;
  return line.split('\n')[0]?.slice(0, 500);
}

/** An error and its cause in one line, the error's name said once. */
export function failureOf(error: string | undefined, cause: string | undefined): string {
  const why = causeOf(cause);
  if (why && error && why.startsWith(`${error}: `)) return why;
  return [error, why].filter(Boolean).join(': ');
}

/**
 * What an execution's history says of its run: which stages and Map iterations started, finished and
 * failed, the records they kept, the run id split gave it, and how the execution ended.
 */
export class ExecutionProgress {
  readonly #events = new Map<number, HistoryEvent>();
  readonly #stages = new Map<string, StateTally>();
  readonly #maps = new Map<string, number>();
  /** The last event applied: the next read of the history stops there. */
  lastId = 0;
  runId?: string;
  split?: { shards: number; records: number };
  end?: ExecutionEnd;
  /** The last task that failed, caught or not: its error says more than a Fail state's. */
  lastFailure?: { state: string; error?: string; cause?: string };
  /** What Merge said it wrote. */
  merged?: { pairs: number; rejects: number };
  /** Lines worth saying once: batch plans. */
  readonly notes: string[] = [];

  apply(event: HistoryEvent): void {
    const id = event.id ?? 0;
    this.#events.set(id, event);
    this.lastId = Math.max(this.lastId, id);
    const at = event.timestamp?.getTime() ?? 0;
    const entered = event.stateEnteredEventDetails?.name;
    const exited = event.stateExitedEventDetails;
    switch (event.type) {
      case 'TaskStateEntered': {
        const stage = this.#stageOf(entered ?? '', 'entered');
        if (stage) {
          const t = this.#tally(stage);
          t.entered++;
          t.firstAt ??= at;
        }
        return;
      }
      case 'TaskStateExited': {
        const name = exited?.name ?? '';
        const output = parseJson(exited?.output) as Record<string, unknown> | undefined;
        this.#noteBatch(name, output);
        const stage = this.#stageOf(name, 'exited');
        // A task whose error a Catch took leaves its state too; it counts as failed, not done.
        if (!stage || FAILED_TASK.has(this.#events.get(event.previousEventId ?? 0)?.type ?? '')) return;
        const t = this.#tally(stage);
        t.done++;
        t.kept += keptOf(stage, output);
        t.lastAt = at;
        const merged = stage === 'merge' ? MergeResult.safeParse(output) : undefined;
        if (merged?.success) this.merged = { pairs: merged.data.pairs, rejects: merged.data.rejects };
        if (stage === 'split' && output) {
          this.runId = typeof output.runId === 'string' ? output.runId : this.runId;
          this.split = {
            shards: Array.isArray(output.shards) ? output.shards.length : 0,
            records: typeof output.records === 'number' ? output.records : 0,
          };
        }
        return;
      }
      case 'TaskFailed':
      case 'TaskTimedOut': {
        const details = event.taskFailedEventDetails ?? event.taskTimedOutEventDetails;
        const state = this.#taskStateOf(event);
        if (state) this.lastFailure = { state, error: details?.error, cause: details?.cause };
        return;
      }
      case 'PassStateEntered':
      case 'FailStateEntered':
        // A Catch sent a shard to its ShardFailed (or the run to ModelUnusable): blame the task it left.
        if (entered?.endsWith('ShardFailed') || event.type === 'FailStateEntered') {
          const state = this.#taskStateOf(event);
          const stage = state ? TASK_STAGES[state] : undefined;
          if (stage) this.#tally(stage).failed++;
        }
        return;
      case 'MapStateStarted': {
        const map = this.#events.get(event.previousEventId ?? 0)?.stateEnteredEventDetails?.name;
        if (map) this.#maps.set(map, event.mapStateStartedEventDetails?.length ?? 0);
        return;
      }
      case 'ExecutionSucceeded':
        this.end = { status: 'SUCCEEDED', output: parseJson(event.executionSucceededEventDetails?.output) };
        return;
      case 'ExecutionFailed':
      case 'ExecutionTimedOut':
      case 'ExecutionAborted': {
        const details =
          event.executionFailedEventDetails ??
          event.executionTimedOutEventDetails ??
          event.executionAbortedEventDetails;
        const status =
          event.type === 'ExecutionFailed'
            ? 'FAILED'
            : event.type === 'ExecutionTimedOut'
              ? 'TIMED_OUT'
              : 'ABORTED';
        this.end = { status, error: details?.error, cause: details?.cause };
        return;
      }
      default:
        return;
    }
  }

  /** Each stage that has started, with what the history and (when given) the stats files say of it. */
  stages(stats?: ReadonlyMap<string, StageTally>): StageProgress[] {
    const rows: StageProgress[] = [];
    for (const stage of STAGE_ORDER) {
      const t = this.#stages.get(stage);
      if (!t) continue;
      const s = stats?.get(stage);
      const running = t.entered - t.done - t.failed;
      if (SINGLE_STEP.has(stage)) {
        rows.push({
          stage,
          ...(stage === 'split' && this.split
            ? {
                shards: { done: this.split.shards, total: this.split.shards },
                records: { done: this.split.records },
              }
            : {}),
          ...(t.done > 0 && stage !== 'split' && stage !== 'merge' ? { kept: t.kept } : {}),
          ...(running > 0
            ? { note: 'running' }
            : t.failed > 0
              ? { note: 'failed' }
              : stage === 'merge' && this.merged
                ? { note: `${this.merged.pairs} pairs, ${this.merged.rejects} rejects` }
                : {}),
        });
        continue;
      }
      const total = stage.startsWith('batch-')
        ? this.#maps.get(`${stage[6]?.toUpperCase()}${stage.slice(7)}Jobs`)
        : (MAPS_OF[stage]?.map((m) => this.#maps.get(m)).find((n) => n !== undefined) ?? this.split?.shards);
      const seconds = t.firstAt !== undefined && t.lastAt !== undefined ? (t.lastAt - t.firstAt) / 1000 : 0;
      const recordsTotal = this.#inputOf(stage, stats);
      rows.push({
        stage,
        shards: { done: t.done, total, failed: t.failed, running },
        ...(s ? { records: { done: s.in, total: recordsTotal } } : {}),
        ...(stage.startsWith('batch-') ? {} : { kept: t.kept }),
        ...(s ? { calls: s.calls } : {}),
        ...(seconds > 0 ? { rate: (s?.in ?? t.kept) / seconds } : {}),
        ...(s ? { costUsd: s.costUsd } : {}),
      });
    }
    return rows;
  }

  /** The records a stage takes in, once the stage before it has finished. */
  #inputOf(stage: string, stats?: ReadonlyMap<string, StageTally>): number | undefined {
    const before = INPUT_OF[stage];
    const t = before ? this.#stages.get(before) : undefined;
    if (!before || !t) return undefined;
    if (SINGLE_STEP.has(before)) return t.done > 0 && before !== 'split' ? t.kept : undefined;
    const total = MAPS_OF[before]?.map((m) => this.#maps.get(m)).find((n) => n !== undefined);
    if (total === undefined || t.done + t.failed < total) return undefined;
    return stats?.get(before)?.out ?? t.kept;
  }

  #tally(stage: string): StateTally {
    let t = this.#stages.get(stage);
    if (!t) {
      t = { entered: 0, done: 0, failed: 0, kept: 0 };
      this.#stages.set(stage, t);
    }
    return t;
  }

  /** A state's stage; of batch steps, a job counts when submitted (entered) and when joined (done). */
  #stageOf(state: string, when: 'entered' | 'exited'): string | undefined {
    const task = TASK_STAGES[state];
    if (task) return task;
    const batch = BATCH_STATE.exec(state);
    if (!batch) return undefined;
    const [, step, stage] = batch;
    if ((step === 'Submit' && when === 'entered') || (step === 'Join' && when === 'exited'))
      return `batch-${stage?.toLowerCase()}`;
    return undefined;
  }

  #noteBatch(state: string, output: Record<string, unknown> | undefined): void {
    const batch = BATCH_STATE.exec(state);
    if (batch?.[1] !== 'Plan') return;
    const plan = (output?.batchPlan as { value?: { jobs?: unknown[] } } | undefined)?.value;
    const jobs = plan?.jobs?.length ?? 0;
    this.notes.push(
      `batch     ${batch[2]?.toLowerCase()}: ${jobs > 0 ? `${jobs} jobs planned` : 'no batch jobs, on-demand'}`,
    );
  }

  /** The task state an event belongs to: back along the event chain to where the state was entered. */
  #taskStateOf(event: HistoryEvent): string | undefined {
    let at: HistoryEvent | undefined = event;
    for (let steps = 0; at && steps < 50; steps++) {
      if (at.type === 'TaskStateEntered') return at.stateEnteredEventDetails?.name;
      at = this.#events.get(at.previousEventId ?? 0);
    }
    return undefined;
  }
}

/** The records a finished stage kept, from its state's output. */
function keptOf(stage: string, output: Record<string, unknown> | undefined): number {
  if (!output) return 0;
  const pick = (value: unknown) => {
    const records = (value as { records?: unknown } | undefined)?.records;
    return typeof records === 'number' ? records : 0;
  };
  if (stage === 'dedup-texts') return pick(output.texts);
  if (stage === 'dedup-instructions') return pick(output.instructions);
  return pick(output);
}

/** Every event of an execution after `afterId`, oldest first: read newest first, so a long history is not read again. */
async function eventsAfter(sfn: SFNClient, executionArn: string, afterId: number): Promise<HistoryEvent[]> {
  const fresh: HistoryEvent[] = [];
  let nextToken: string | undefined;
  do {
    const page = await sfn.send(
      new GetExecutionHistoryCommand({ executionArn, reverseOrder: true, maxResults: 1000, nextToken }),
    );
    for (const event of page.events ?? []) {
      if ((event.id ?? 0) <= afterId) return fresh.reverse();
      fresh.push(event);
    }
    nextToken = page.nextToken;
  } while (nextToken);
  return fresh.reverse();
}

/** What `submit` was asked to do. */
export interface SubmitOptions {
  readonly input: string;
  readonly stack: string;
  /** Follow the execution to its end. @default true */
  readonly follow?: boolean;
  /** Shows the stages while following; lines said once go through it too. */
  readonly progress?: ProgressRenderer;
  /** How long the execution may take to appear after the upload. @default 120000 */
  readonly appearTimeoutMs?: number;
  /** Time between two reads of the execution's history. @default 5000 */
  readonly pollMs?: number;
}

/** Where a run stands when `submit` returns. */
export interface RunOutcome {
  readonly runId: string;
  readonly executionArn: string;
  /** RUNNING when not followed to the end. */
  readonly status: string;
  readonly error?: string;
  readonly cause?: string;
  /** The task whose failure ended the run, and what it said. */
  readonly failedTask?: string;
  readonly pairs?: number;
  readonly rejects?: number;
  /** Where the run's outputs land. */
  readonly outputs: string;
}

const APPEAR_BACKOFF_MS = [1000, 2000, 4000, 8000];
const APPEAR_MAX_WAIT_MS = 10_000;

/**
 * Uploads an input under `incoming/` of the stack's bucket (multipart above 8 MiB), which starts an
 * execution through EventBridge; finds that execution and, unless told not to, follows it to its end.
 * EventBridge names the execution itself, so it is found by its input: the S3 event for this bucket, key and
 * ETag, among executions that were not there before the upload.
 */
export async function submitRun(options: SubmitOptions, clients: RemoteClients): Promise<RunOutcome> {
  const { s3, sfn } = clients;
  const info = await stat(options.input).catch(() => undefined);
  if (!info?.isFile()) throw new InputError(`${options.input}: no such file`);
  const { bucket, stateMachineArn } = await stackResources(clients.cfn, options.stack);
  const key = `${INCOMING_PREFIX}${basename(options.input)}`;
  const say = (line: string) => options.progress?.say(line);

  // Executions already there cannot be this upload's, even for the same bytes uploaded earlier.
  const before = new Set(
    ((await sfn.send(new ListExecutionsCommand({ stateMachineArn, maxResults: 100 }))).executions ?? []).map(
      (e) => e.executionArn,
    ),
  );
  const uploadStarted = Date.now();
  say(`upload    ${options.input} -> s3://${bucket}/${key} (${info.size} bytes)`);
  const upload = new Upload({
    client: s3,
    params: { Bucket: bucket, Key: key, Body: createReadStream(options.input) },
    partSize: UPLOAD_PART_BYTES,
    queueSize: UPLOAD_QUEUE,
  });
  const uploaded = await upload.done();
  if (!uploaded.ETag) throw new RemoteRunError(`s3://${bucket}/${key}: the upload returned no ETag`);
  const etag = unquoted(uploaded.ETag);

  const found = await findExecution(
    { stateMachineArn, bucket, key, etag, before, since: uploadStarted },
    clients,
    options.appearTimeoutMs ?? 120_000,
  );
  const runId = runIdOfEvent(found.event, key);
  const outputs = `s3://${bucket}/${outputKey(runId, '')}`;
  say(`execution ${found.executionArn}`);
  if (options.follow === false)
    return { runId, executionArn: found.executionArn, status: found.status, outputs };
  return followRun(found.executionArn, { runId, bucket, outputs, options }, clients);
}

/** Polls, with backoff, for the execution the S3 event of this upload started. */
async function findExecution(
  upload: {
    stateMachineArn: string;
    bucket: string;
    key: string;
    etag: string;
    before: ReadonlySet<string | undefined>;
    since: number;
  },
  clients: RemoteClients,
  timeoutMs: number,
): Promise<{ executionArn: string; status: string; event: ObjectCreated }> {
  const sleep = clients.sleep ?? delay;
  const seen = new Set<string>();
  // Clocks differ: an execution that started a little "before" the upload by this machine's clock may be ours.
  const earliest = upload.since - 5 * 60_000;
  let waited = 0;
  for (let attempt = 0; ; attempt++) {
    let nextToken: string | undefined;
    do {
      const page = await clients.sfn.send(
        new ListExecutionsCommand({ stateMachineArn: upload.stateMachineArn, maxResults: 100, nextToken }),
      );
      const candidates = (page.executions ?? []).filter(
        (e) =>
          e.executionArn &&
          !upload.before.has(e.executionArn) &&
          !seen.has(e.executionArn) &&
          (e.startDate?.getTime() ?? 0) >= earliest,
      );
      for (const candidate of candidates) {
        const arn = candidate.executionArn as string;
        seen.add(arn);
        const described = await clients.sfn.send(new DescribeExecutionCommand({ executionArn: arn }));
        const event = S3ObjectCreatedEvent.safeParse(parseJson(described.input));
        if (!event.success) continue;
        const { bucket, object } = event.data.detail;
        if (
          bucket.name === upload.bucket &&
          (object.key === upload.key || decodedKey(object.key) === upload.key) &&
          object.etag !== undefined &&
          unquoted(object.etag) === upload.etag
        )
          return { executionArn: arn, status: described.status ?? 'RUNNING', event: event.data };
      }
      // Newest first: once a page holds only executions known from before, older pages hold no new one.
      nextToken = candidates.length > 0 ? page.nextToken : undefined;
    } while (nextToken);
    if (waited >= timeoutMs)
      throw new RemoteRunError(
        `no execution of ${upload.stateMachineArn} started for s3://${upload.bucket}/${upload.key} ` +
          `(ETag ${upload.etag}) within ${Math.round(timeoutMs / 1000)} s; the bucket's Object Created event ` +
          "starts it through EventBridge: check that the stack's InputUploaded rule is enabled and look at the " +
          "state machine's recent executions",
      );
    const wait = Math.min(APPEAR_BACKOFF_MS[attempt] ?? APPEAR_MAX_WAIT_MS, timeoutMs - waited);
    await sleep(wait);
    waited += wait;
  }
}

/** Follows an execution to its end, showing its stages; a redelivered event's execution hands over to the run's. */
async function followRun(
  executionArn: string,
  run: { runId: string; bucket: string; outputs: string; options: SubmitOptions },
  clients: RemoteClients,
): Promise<RunOutcome> {
  const sleep = clients.sleep ?? delay;
  const files = s3RunFiles(clients.s3, run.bucket);
  const progress = run.options.progress;
  const stats = new ShardStatsReader(files, run.runId);
  const tracker = new ExecutionProgress();
  const printed = new Map<string, string>();
  let notes = 0;
  for (;;) {
    for (const event of await eventsAfter(clients.sfn, executionArn, tracker.lastId)) tracker.apply(event);
    const tallies = tracker.split ? await stats.tally() : undefined;
    for (; notes < tracker.notes.length; notes++) progress?.say(tracker.notes[notes] as string);
    for (const row of tracker.stages(tallies)) {
      // A log gets a line when a stage's shard counts change, not for each figure.
      const summary = JSON.stringify([row.shards, row.note, row.kept]);
      const changed = printed.get(row.stage) !== summary;
      printed.set(row.stage, summary);
      progress?.update(row, changed ? formatStage(row) : undefined);
    }
    if (tracker.end) break;
    await sleep(run.options.pollMs ?? 5000);
  }
  const end = tracker.end;
  const output = end.output as { duplicate?: unknown } | undefined;
  if (end.status === 'SUCCEEDED' && output?.duplicate === true) {
    // A redelivered event started this one; the run belongs to the execution that claimed it first.
    const marker = RunMarker.safeParse(parseJson(await files.get(markerKey(run.runId))));
    if (marker.success && marker.data.executionId !== executionArn) {
      progress?.say(
        `execution ${executionArn} was a second delivery of the event; following ${marker.data.executionId}`,
      );
      return followRun(marker.data.executionId, run, clients);
    }
  }
  const merged = MergeResult.safeParse(end.output);
  const failure = end.status === 'SUCCEEDED' ? undefined : tracker.lastFailure;
  return {
    runId: tracker.runId ?? run.runId,
    executionArn,
    status: end.status,
    ...(end.error ? { error: end.error } : {}),
    ...(end.cause ? { cause: causeOf(end.cause) } : {}),
    ...(failure
      ? { failedTask: `${failure.state}: ${failureOf(failure.error, failure.cause) || 'failed'}` }
      : {}),
    ...(merged.success ? { pairs: merged.data.pairs, rejects: merged.data.rejects } : {}),
    outputs: run.outputs,
  };
}

/** Which run `status` reads: in a local run folder (`out`) or in a deployed stack's bucket (`stack`). */
export interface StatusOptions {
  readonly runId: string;
  readonly out?: string;
  readonly stack?: string;
}

/** A run's state: running, succeeded or failed in AWS; locally, succeeded or incomplete (running, or stopped). */
export type RunState = 'running' | 'succeeded' | 'failed' | 'incomplete';

/** Where a run stands, stage by stage. */
export interface RunStatus {
  readonly runId: string;
  /** The run's folder: `s3://bucket/runs/<runId>/` or a local path. */
  readonly where: string;
  readonly state: RunState;
  readonly execution?: {
    readonly arn: string;
    readonly status: string;
    readonly error?: string;
    readonly cause?: string;
  };
  readonly stages: readonly StageProgress[];
  readonly pairs?: number;
  readonly rejects?: number;
  readonly calls: number;
  readonly costUsd: number;
}

/** What report.json says that status shows. */
interface Report {
  pairs: number;
  rejects: number;
  stages: Record<string, StageStats & { batchCostUsd?: number }>;
  totals: { calls: number; costUsd: number };
  failedShards: { shard: string; stage: string }[];
}

/**
 * Reads where a run stands from its files: the run marker, the manifest, each shard stage's stats, and
 * report.json once merged; in AWS, with the status of the execution the marker names.
 */
export async function runStatus(options: StatusOptions, clients?: RemoteClients): Promise<RunStatus> {
  const { runId } = options;
  let files: RunFiles;
  if (options.out !== undefined) files = localRunFiles(join(resolve(options.out), 'store'));
  else if (options.stack !== undefined && clients)
    files = s3RunFiles(clients.s3, (await stackResources(clients.cfn, options.stack)).bucket);
  else throw new InputError('status reads a local run folder (--out) or a deployed stack (--stack)');
  const where = `${files.where}${runPrefix(runId)}/`;
  const markerText = await files.get(markerKey(runId));
  if (markerText === undefined) throw new InputError(`no run ${runId} at ${where}`);
  const marker = RunMarker.parse(JSON.parse(markerText));
  const manifestText = await files.get(manifestKey(runId));
  const manifest = manifestText === undefined ? undefined : Manifest.parse(JSON.parse(manifestText));
  const reportText = await files.get(outputKey(runId, 'report.json'));
  const report = reportText === undefined ? undefined : (JSON.parse(reportText) as Report);
  const splitStats = StageStats.safeParse(parseJson(await files.get(splitStatsKey(runId))));
  const tallies = await new ShardStatsReader(files, runId).tally();

  const total = manifest?.shards.length;
  const stages: StageProgress[] = [];
  if (splitStats.success)
    stages.push({
      stage: 'split',
      shards: { done: total ?? 0, total },
      records: { done: splitStats.data.in },
      kept: splitStats.data.out,
    });
  let previousOut = splitStats.success ? splitStats.data.out : undefined;
  let previousComplete = splitStats.success;
  for (const [index, stage] of SHARD_STAGES.entries()) {
    const t = tallies.get(stage);
    const fromReport = report?.stages[stage];
    // Intermediate stats expire after 14 days; the report keeps the sums.
    const figures = fromReport
      ? {
          shards: report.failedShards.filter((f) => SHARD_STAGES.indexOf(f.stage as ShardStage) <= index)
            .length,
          in: fromReport.in,
          out: fromReport.out,
          calls: fromReport.calls,
          costUsd: fromReport.costUsd + (fromReport.batchCostUsd ?? 0),
        }
      : t;
    if (!figures) {
      previousComplete = false;
      continue;
    }
    const done = fromReport ? (total ?? 0) - figures.shards : figures.shards;
    const failed = report?.failedShards.filter((f) => f.stage === stage).length ?? 0;
    stages.push({
      stage,
      shards: { done, total, ...(failed ? { failed } : {}) },
      records: {
        done: figures.in,
        ...(previousComplete && previousOut !== undefined ? { total: previousOut } : {}),
      },
      kept: figures.out,
      calls: figures.calls,
      costUsd: figures.costUsd,
    });
    previousComplete = total !== undefined && done + failed >= total;
    previousOut = figures.out;
  }
  if (report) stages.push({ stage: 'merge', note: `${report.pairs} pairs, ${report.rejects} rejects` });

  let state: RunState = report ? 'succeeded' : 'incomplete';
  let execution: RunStatus['execution'];
  if (options.out === undefined && clients) {
    const described = await clients.sfn.send(
      new DescribeExecutionCommand({ executionArn: marker.executionId }),
    );
    const status = described.status ?? 'RUNNING';
    state = status === 'SUCCEEDED' ? 'succeeded' : status === 'RUNNING' ? 'running' : 'failed';
    execution = {
      arn: marker.executionId,
      status,
      ...(described.error ? { error: described.error } : {}),
      ...(described.cause ? { cause: causeOf(described.cause) } : {}),
    };
  }
  const summed = stages.reduce(
    (s, r) => ({ calls: s.calls + (r.calls ?? 0), costUsd: s.costUsd + (r.costUsd ?? 0) }),
    {
      calls: 0,
      costUsd: 0,
    },
  );
  return {
    runId,
    where,
    state,
    ...(execution ? { execution } : {}),
    stages,
    ...(report ? { pairs: report.pairs, rejects: report.rejects } : {}),
    // The report's totals count batch answers as calls too.
    calls: report?.totals.calls ?? summed.calls,
    costUsd: report?.totals.costUsd ?? summed.costUsd,
  };
}

/** Which run `fetch` downloads, and where to. */
export interface FetchOptions {
  readonly runId: string;
  readonly stack: string;
  readonly out: string;
}

/**
 * Downloads `runs/<runId>/output/*` of the stack's bucket into `out`, each object streamed to a file beside
 * its place and renamed into it when whole. Returns the files written.
 */
export async function fetchRun(options: FetchOptions, clients: RemoteClients): Promise<string[]> {
  const { bucket } = await stackResources(clients.cfn, options.stack);
  const prefix = outputKey(options.runId, '');
  const out = resolve(options.out);
  const written: string[] = [];
  for await (const { key } of listObjects(clients.s3, bucket, prefix)) {
    const name = key.slice(prefix.length);
    if (!name || name.endsWith('/')) continue;
    // As a local run does: the dataset card never replaces a README.md that is not an earlier card.
    const path = name.includes('/') ? resolve(out, name) : await exportPath(out, name);
    // A key is data from the bucket: it must not write outside the folder asked for.
    if (!path.startsWith(out + sep))
      throw new RemoteRunError(`s3://${bucket}/${key}: its name leads outside ${out}`);
    await mkdir(dirname(path), { recursive: true });
    const object = await clients.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const temp = `${path}.part`;
    try {
      await pipeline(object.Body as Readable, createWriteStream(temp));
      await rename(temp, path);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
    written.push(path);
  }
  if (written.length === 0)
    throw new RemoteRunError(
      `run ${options.runId} has no outputs at s3://${bucket}/${prefix}; it may still be running: ` +
        `safer-instruct status ${options.runId} --stack ${options.stack}`,
    );
  return written;
}
