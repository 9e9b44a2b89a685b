import './polyfill.js';
import { copyFile, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { StateMachine } from 'aws-local-stepfunctions';
import type { BatchService } from '../pipeline/batch/batch-service.js';
import { LocalBatchService } from '../pipeline/batch/local-batch.js';
import { Budget } from '../pipeline/budget.js';
import { type PipelineConfig, parseConfig } from '../pipeline/config.js';
import type { StageDeps } from '../pipeline/deps.js';
import { InputError, LocalEngineError } from '../pipeline/errors.js';
import { CARD_MARK } from '../pipeline/export/dataset-card.js';
import { configKey, INCOMING_PREFIX, markerKey, runPrefix, shardStatsKey } from '../pipeline/keys.js';
import type { CallCache } from '../pipeline/models/call-cache.js';
import { GovernorPool } from '../pipeline/models/governor-pool.js';
import { ModelRegistry } from '../pipeline/models/registry.js';
import { type ParameterStore, StoreParameterStore } from '../pipeline/parameters.js';
import { runIdFor } from '../pipeline/records.js';
import {
  MergeResult,
  MODEL_STAGES,
  type ModelStage,
  RunMarker,
  SplitResult,
  StageStats,
} from '../pipeline/schemas.js';
import { FsStore } from '../pipeline/store/fs-store.js';
import { toJsonl } from '../pipeline/store/store.js';
import { LOCAL_ENV } from './definition.js';
import { EVENT_HANDLED_STAGES, STAGE_HANDLERS, TUNING_HANDLERS } from './handlers.js';
import { synthesizePipeline } from './synth.js';

/** What the local engine reports while it runs. */
export type ProgressEvent =
  | { readonly type: 'split'; readonly runId: string; readonly shards: number; readonly records: number }
  | {
      readonly type: 'stage';
      readonly stage: string;
      readonly shard: string;
      readonly records: number;
      readonly ms: number;
      /** A model stage's shard: records it took in, calls it paid, and their dollars. */
      readonly in?: number;
      readonly calls?: number;
      readonly costUsd?: number;
    }
  | {
      readonly type: 'stage-error';
      readonly stage: string;
      readonly shard: string;
      /** The error's name, as Step Functions matches it in Retry and Catch. */
      readonly error: string;
      /** The first line of its message. */
      readonly message: string;
    };

/** A local run of one input file, or the resumption of an earlier run in the same `outDir`. */
export interface LocalRunOptions {
  /** The input file; not needed to resume. */
  readonly input?: string;
  /** The id of a run in `outDir` to continue from the shards and stages it already wrote. */
  readonly resume?: string;
  readonly outDir: string;
  /** The configuration of a new run; a resumed run keeps the one it started with. */
  readonly config: PipelineConfig;
  /** Answered model calls; absent, every call is paid. */
  readonly cache?: CallCache;
  /** Shared model clients; a run creates (and closes) its own when absent. */
  readonly registry?: StageDeps['models'];
  /** Where `ssm:` model specs are read; default the run store's `parameters/`. */
  readonly parameters?: ParameterStore;
  readonly onProgress?: (event: ProgressEvent) => void;
  /** Milliseconds to wait before each retry instead of the definition's intervals (tests). */
  readonly retryIntervalMs?: number;
  /** Runs batch jobs in modes `batch` and `auto`; default the emulator, answering with the stage's model. */
  readonly batch?: BatchService;
  /** Stops the run before a paid call would pass this many dollars; a resumed run counts what it paid before. */
  readonly maxBudgetUsd?: number;
}

/** Where a local run's outputs went, and their counts. */
export interface LocalRunResult {
  readonly runId: string;
  readonly duplicate: boolean;
  readonly pairs: number;
  readonly rejects: number;
  readonly pairsPath: string;
  readonly rejectsPath: string;
  readonly reportPath: string;
  /** The exports copied into `outDir`: JSONL formats, Parquet, the dataset card. */
  readonly exportPaths: readonly string[];
}

type Json = Record<string, unknown>;

/** Every Task state that invokes Lambda, inside Maps and Parallels too; only those waiting for a task token with `waiting`. */
function lambdaTaskStates(states: Json, into: string[] = [], waiting = false): string[] {
  for (const [name, state] of Object.entries(states) as [string, Json][]) {
    const resource = String(state.Resource);
    if (
      state.Type === 'Task' &&
      resource.includes(':lambda:invoke') &&
      (!waiting || resource.endsWith('.waitForTaskToken'))
    )
      into.push(name);
    const processor = (state.ItemProcessor ?? state.Iterator) as Json | undefined;
    if (processor) lambdaTaskStates(processor.States as Json, into, waiting);
    for (const branch of (state.Branches as Json[] | undefined) ?? [])
      lambdaTaskStates(branch.States as Json, into, waiting);
  }
  return into;
}

/** Every Task state that puts events on EventBridge (the `Run Completed` notice), inside Maps and Parallels too. */
function putEventsTaskStates(states: Json, into: string[] = []): string[] {
  for (const [name, state] of Object.entries(states) as [string, Json][]) {
    if (state.Type === 'Task' && String(state.Resource).endsWith(':states:::events:putEvents'))
      into.push(name);
    const processor = (state.ItemProcessor ?? state.Iterator) as Json | undefined;
    if (processor) putEventsTaskStates(processor.States as Json, into);
    for (const branch of (state.Branches as Json[] | undefined) ?? [])
      putEventsTaskStates(branch.States as Json, into);
  }
  return into;
}

/** An event the definition put on EventBridge, as the local engine recorded it instead. */
export interface LocalEvent {
  readonly source: string;
  readonly detailType: string;
  readonly detail: unknown;
}

/** What an execution of the synthesized definition needs locally. */
export interface LocalExecutionOptions {
  readonly store: FsStore;
  readonly config: PipelineConfig;
  readonly registry: StageDeps['models'];
  readonly cache?: CallCache;
  /** Rate governors; default one pool for the execution, shared by all its shards. */
  readonly governors?: GovernorPool;
  /** Where `ssm:` model specs are read; default the store's `parameters/`, where local tuning writes. */
  readonly parameters?: ParameterStore;
  /** The execution input, as EventBridge or a StartExecution call would give it. */
  readonly input: unknown;
  /** The execution name; a second execution of the same run needs a new one, as in AWS. */
  readonly executionName: string;
  readonly onProgress?: (event: ProgressEvent) => void;
  /** Milliseconds to wait before each retry instead of the definition's intervals (tests). */
  readonly retryIntervalMs?: number;
  /** Runs batch jobs; default the emulator, answering with the stage's model. */
  readonly batch?: BatchService;
  /** The run's budget, shared by all its shards. */
  readonly budget?: Budget;
  /** Gets each event the definition puts on EventBridge; they are also kept under `events/` in the store. */
  readonly onEvent?: (event: LocalEvent) => void;
}

/**
 * Executes the deployed state machine on this machine: synthesizes the stack, runs its definition with
 * aws-local-stepfunctions, and dispatches each Lambda task to its handler module in process, over a
 * filesystem store with the same keys as S3. Returns the execution's output; a failed execution throws
 * the error of the task that failed it.
 */
export async function executeLocally(options: LocalExecutionOptions): Promise<Record<string, unknown>> {
  const { store, registry } = options;
  const { definition, functions } = synthesizePipeline(options.config);
  const handlers = new Map<string, (event: unknown) => Promise<unknown>>();
  const governors = options.governors ?? new GovernorPool({ sharedByShards: true });
  // Batch jobs run on the emulator, answered by the stage's own model: the same pairs as on-demand.
  const batch =
    options.batch ??
    new LocalBatchService(store, async (job) =>
      registry.get(
        parseConfig(JSON.parse(await store.get(configKey(job.runId))), 'run config').models[job.stage],
      ),
    );
  for (const [arn, fn] of functions) {
    const module = STAGE_HANDLERS[fn.stage];
    if (!module) {
      if (fn.stage in TUNING_HANDLERS || EVENT_HANDLED_STAGES.has(fn.stage)) continue;
      throw new LocalEngineError(`no handler module for stage ${fn.stage}`);
    }
    const deps: StageDeps = {
      store,
      models: registry,
      cache: options.cache,
      governors,
      parameters: options.parameters ?? new StoreParameterStore(store),
      batch,
      budget: options.budget,
    };
    handlers.set(
      arn,
      module.createHandler(() => deps),
    );
  }

  const progress = options.onProgress ?? (() => {});
  let fatal: Error | undefined;
  const inFlight = new Set<Promise<unknown>>();
  let ended = false;
  const invoke = (request: unknown) => {
    // As in AWS, a failed execution starts no more tasks; those already running finish.
    if (ended) return Promise.reject(new LocalEngineError('the execution has already failed'));
    const call = dispatch(request);
    inFlight.add(call);
    call.then(
      () => inFlight.delete(call),
      () => inFlight.delete(call),
    );
    return call;
  };
  const dispatch = async (request: unknown) => {
    const { FunctionName, Payload } = request as { FunctionName: string; Payload: unknown };
    const fn = functions.get(FunctionName);
    const handler = handlers.get(FunctionName);
    if (!fn || !handler)
      throw new LocalEngineError(`the definition invokes an unknown function ${FunctionName}`);
    const started = Date.now();
    // One dedup function serves both passes, and one batch function three steps; progress names which.
    const { field, action, jobName } = Payload as { field?: string; action?: string; jobName?: string };
    const shard =
      fn.stage === 'batch'
        ? [(Payload as { stage?: string }).stage, jobName].filter(Boolean).join(' ')
        : ((Payload as { shard?: string }).shard ?? '');
    const stage =
      fn.stage === 'dedup' ? `dedup-${field}s` : fn.stage === 'batch' ? `batch-${action}` : fn.stage;
    try {
      const result = await handler(Payload);
      if (fn.stage === 'split') {
        const split = SplitResult.parse(result);
        progress({ type: 'split', runId: split.runId, shards: split.shards.length, records: split.records });
      } else
        progress({
          type: 'stage',
          stage,
          shard,
          records: batchCount(result) ?? (result as { records?: number }).records ?? 0,
          ms: Date.now() - started,
          ...(await shardFigures(store, fn.stage, Payload)),
        });
      return { StatusCode: 200, Payload: result } as never;
    } catch (error) {
      const name = (error as Error).name;
      // These fail the execution; its error then says only the name, so keep the message to report.
      // Every batch step has a Catch: its errors send calls on-demand and fail nothing.
      if (
        name === 'ModelConfigError' ||
        name === 'BudgetExceededError' ||
        !(MODEL_STAGES as readonly string[]).concat('batch').includes(fn.stage)
      )
        fatal ??= error as Error;
      const message = String((error as Error).message ?? error).split('\n')[0] ?? '';
      progress({ type: 'stage-error', stage, shard, error: name, message });
      throw error;
    }
  };

  // No event bus here: an event the definition puts is recorded under events/<execution>.jsonl and handed to
  // onEvent, and the task answers as PutEvents does.
  const putEvents = async (request: unknown) => {
    const entries = (request as { Entries: { Source: string; DetailType: string; Detail: unknown }[] })
      .Entries;
    const events = entries.map((e) => ({ source: e.Source, detailType: e.DetailType, detail: e.Detail }));
    await store.put(`events/${options.executionName}.jsonl`, toJsonl(events));
    for (const event of events) options.onEvent?.(event);
    return {
      Entries: events.map((_, i) => ({ EventId: `local-${options.executionName}-${i}` })),
      FailedEntryCount: 0,
    };
  };
  const taskStates = lambdaTaskStates(definition.States as Json);
  const waitStates = new Set(lambdaTaskStates(definition.States as Json, [], true));
  const executionId = `arn:${LOCAL_ENV.partition}:states:${LOCAL_ENV.region}:${LOCAL_ENV.account}:execution:SaferInstruct:${options.executionName}`;
  const machine = new StateMachine(definition as never, { validationOptions: { checkArn: false } });
  const execution = machine.run(options.input as never, {
    overrides: {
      // A task that waits for a token gets the callback's output; the emulator's submit returns it at once.
      taskResourceLocalHandlers: {
        ...Object.fromEntries(
          taskStates.map((name) => [
            name,
            waitStates.has(name)
              ? async (request: unknown) => ((await invoke(request)) as { Payload: never }).Payload
              : invoke,
          ]),
        ),
        ...Object.fromEntries(
          putEventsTaskStates(definition.States as Json).map((name) => [name, putEvents]),
        ),
      },
      ...(options.retryIntervalMs === undefined
        ? {}
        : {
            retryIntervalOverrides: Object.fromEntries(
              taskStates.map((n) => [n, options.retryIntervalMs as number]),
            ),
          }),
    },
    context: {
      Execution: {
        Id: executionId,
        Name: options.executionName,
        Input: options.input as never,
        StartTime: new Date().toISOString(),
      },
      // What `$$.Task.Token` reads: locally nothing waits on it, the emulated job has ended at submit.
      Task: { Token: `local:${options.executionName}` },
    },
  });
  return (await execution.result.catch(async (error: unknown) => {
    ended = true;
    // A failed execution leaves other Map iterations running here; let them end, so that a resume
    // (or the caller) never races their writes.
    while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    throw fatal ?? error;
  })) as Json;
}

/** A model stage's figures for one shard, from the stats it just wrote: records in, calls paid, dollars. */
async function shardFigures(store: FsStore, stage: string, payload: unknown) {
  const { runId, shard } = payload as { runId?: string; shard?: string };
  if (!MODEL_STAGES.includes(stage as ModelStage) || !runId || !shard) return {};
  const text = await store.tryGet(shardStatsKey(runId, shard, stage as ModelStage));
  if (text === undefined) return {};
  const stats = StageStats.parse(JSON.parse(text));
  return { in: stats.in, calls: stats.calls, costUsd: stats.costUsd };
}

/** What a batch step's progress counts: the jobs a plan made, or the answers a join put in the cache. */
const batchCount = (result: unknown): number | undefined => {
  const r = result as { jobs?: unknown; answered?: unknown };
  if (Array.isArray(r.jobs)) return r.jobs.length;
  return typeof r.answered === 'number' ? r.answered : undefined;
};

/** The frozen configuration of a run in `outDir`; an InputError when there is no such run. */
export async function loadRunConfig(outDir: string, runId: string): Promise<PipelineConfig> {
  const store = new FsStore(join(resolve(outDir), 'store'));
  const text = await store.tryGet(configKey(runId));
  if (text === undefined) throw new InputError(`no run ${runId} in ${outDir}${await runsListed(store)}`);
  return parseConfig(JSON.parse(text), `run ${runId} config`);
}

const runsListed = async (store: FsStore) => {
  const runs = await readdir(store.pathOf('runs')).catch(() => [] as string[]);
  return runs.length ? ` (runs there: ${runs.join(', ')})` : ' (no runs there)';
};

/**
 * Runs the pipeline on this machine over one input file: stages it under `incoming/` of a filesystem
 * store in `<outDir>/store`, executes the synthesized definition, and copies the run's pairs, rejects and
 * report into `outDir`. With `resume`, executes the run again under its first execution's name, as a
 * redrive does in AWS: stages already written are skipped, and calls already answered come from the cache.
 */
export async function runLocal(options: LocalRunOptions): Promise<LocalRunResult> {
  const outDir = resolve(options.outDir);
  const store = new FsStore(join(outDir, 'store'));
  const start = options.resume ? await resumed(store, options.resume, outDir) : await fresh(store, options);

  const budget =
    options.maxBudgetUsd === undefined
      ? undefined
      : await Budget.forRun(store, start.runId, options.maxBudgetUsd);
  const owned = options.registry ? undefined : new ModelRegistry();
  try {
    const output = await executeLocally({
      store,
      config: options.resume ? await loadRunConfig(outDir, options.resume) : options.config,
      registry: options.registry ?? (owned as ModelRegistry),
      parameters: options.parameters,
      cache: options.cache,
      input: start.input,
      executionName: start.executionName,
      onProgress: options.onProgress,
      retryIntervalMs: options.retryIntervalMs,
      batch: options.batch,
      budget,
    });
    if (output.duplicate === true) {
      const runId = String(output.runId);
      return {
        runId,
        duplicate: true,
        pairs: 0,
        rejects: 0,
        pairsPath: '',
        rejectsPath: '',
        reportPath: '',
        exportPaths: [],
      };
    }
    const merged = MergeResult.parse(output);
    const paths = {
      pairsPath: join(outDir, 'pairs.jsonl'),
      rejectsPath: join(outDir, 'rejects.jsonl'),
      reportPath: join(outDir, 'report.json'),
    };
    await copyFile(store.pathOf(merged.pairsKey), paths.pairsPath);
    await copyFile(store.pathOf(merged.rejectsKey), paths.rejectsPath);
    await copyFile(store.pathOf(merged.reportKey), paths.reportPath);
    const exportPaths = await Promise.all(merged.exportKeys.map((key) => exportPath(outDir, basename(key))));
    for (const [i, key] of merged.exportKeys.entries())
      await copyFile(store.pathOf(key), exportPaths[i] as string);
    return {
      runId: merged.runId,
      duplicate: false,
      pairs: merged.pairs,
      rejects: merged.rejects,
      ...paths,
      exportPaths,
    };
  } finally {
    await owned?.closeAll();
  }
}

/**
 * Where an export goes in `outDir`: its own name, except that the dataset card never replaces a
 * README.md that is not an earlier card (`--out .` in a project must not overwrite its README).
 */
export async function exportPath(outDir: string, file: string): Promise<string> {
  const path = join(outDir, file);
  if (file !== 'README.md') return path;
  const existing = await readFile(path, 'utf8').catch(() => undefined);
  return existing === undefined || existing.includes(CARD_MARK) ? path : join(outDir, 'dataset-card.md');
}

/** Stages the input of a new run and clears what an earlier run of the same input left. */
async function fresh(store: FsStore, options: LocalRunOptions) {
  if (!options.input) throw new InputError('a run needs an input file, or a run id to resume');
  const inputPath = resolve(options.input);
  const info = await stat(inputPath).catch(() => undefined);
  if (!info?.isFile()) throw new InputError(`${options.input}: no such file`);
  const inputKey = `${INCOMING_PREFIX}${basename(inputPath)}`;
  await mkdir(join(store.root, INCOMING_PREFIX), { recursive: true });
  await copyFile(inputPath, store.pathOf(inputKey));
  // The ETag the store gives, as S3 gives one: split checks the input against it when resumed.
  const etag = (await store.head(inputKey))?.etag as string;
  // A new run starts clean; what it can reuse of an earlier one comes from the call cache.
  const runId = runIdFor(inputKey, etag);
  await rm(store.pathOf(runPrefix(runId)), { recursive: true, force: true });
  return {
    runId,
    input: { inputKey, etag },
    executionName: `local-${etag.slice(0, 12)}-${Date.now().toString(36)}`,
  };
}

/** The start of a resumed run: its first execution's input and name, from the run's marker. */
async function resumed(store: FsStore, runId: string, outDir: string) {
  const text = await store.tryGet(markerKey(runId));
  if (text === undefined) throw new InputError(`no run ${runId} in ${outDir}${await runsListed(store)}`);
  const marker = RunMarker.parse(JSON.parse(text));
  const executionName = marker.executionId.split(':').pop() as string;
  return { runId, input: { inputKey: marker.inputKey, etag: marker.etag ?? undefined }, executionName };
}
