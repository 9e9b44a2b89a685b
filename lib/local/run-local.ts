import './polyfill.js';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { StateMachine } from 'aws-local-stepfunctions';
import type { PipelineConfig } from '../pipeline/config.js';
import type { StageDeps } from '../pipeline/deps.js';
import { InputError } from '../pipeline/errors.js';
import { INCOMING_PREFIX } from '../pipeline/keys.js';
import { ModelRegistry } from '../pipeline/models/registry.js';
import { MergeResult, SplitResult } from '../pipeline/schemas.js';
import { FsStore } from '../pipeline/store/fs-store.js';
import { LOCAL_ENV } from './definition.js';
import { STAGE_HANDLERS } from './handlers.js';
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
    }
  | { readonly type: 'stage-error'; readonly stage: string; readonly shard: string; readonly error: string };

export interface LocalRunOptions {
  readonly input: string;
  readonly outDir: string;
  readonly config: PipelineConfig;
  /** Shared model clients; a run creates (and closes) its own when absent. */
  readonly registry?: StageDeps['models'];
  readonly onProgress?: (event: ProgressEvent) => void;
  /** Milliseconds to wait before each retry instead of the definition's intervals (tests). */
  readonly retryIntervalMs?: number;
}

export interface LocalRunResult {
  readonly runId: string;
  readonly duplicate: boolean;
  readonly pairs: number;
  readonly rejects: number;
  readonly pairsPath: string;
  readonly rejectsPath: string;
  readonly reportPath: string;
}

type Json = Record<string, unknown>;

/** Every Task state that invokes Lambda, inside Maps and Parallels too. */
function lambdaTaskStates(states: Json, into: string[] = []): string[] {
  for (const [name, state] of Object.entries(states) as [string, Json][]) {
    if (state.Type === 'Task' && String(state.Resource).includes(':lambda:invoke')) into.push(name);
    const processor = (state.ItemProcessor ?? state.Iterator) as Json | undefined;
    if (processor) lambdaTaskStates(processor.States as Json, into);
    for (const branch of (state.Branches as Json[] | undefined) ?? [])
      lambdaTaskStates(branch.States as Json, into);
  }
  return into;
}

const sha256OfFile = async (path: string) => {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
};

/**
 * Runs the pipeline on this machine: synthesizes the deployed state machine, executes that
 * definition with aws-local-stepfunctions, and dispatches each Lambda task to its handler module
 * in process, over a filesystem store under `<outDir>/store` with the same keys as S3.
 */
export async function runLocal(options: LocalRunOptions): Promise<LocalRunResult> {
  const inputPath = resolve(options.input);
  const info = await stat(inputPath).catch(() => undefined);
  if (!info?.isFile()) throw new InputError(`${options.input}: no such file`);
  const outDir = resolve(options.outDir);
  const store = new FsStore(join(outDir, 'store'));
  const inputKey = `${INCOMING_PREFIX}${basename(inputPath)}`;
  await mkdir(join(store.root, INCOMING_PREFIX), { recursive: true });
  await copyFile(inputPath, store.pathOf(inputKey));
  const etag = await sha256OfFile(inputPath);

  const { definition, functions } = synthesizePipeline(options.config);
  const owned = options.registry ? undefined : new ModelRegistry();
  const registry = options.registry ?? (owned as ModelRegistry);
  const handlers = new Map<string, (event: unknown) => Promise<unknown>>();
  for (const [arn, fn] of functions) {
    const module = STAGE_HANDLERS[fn.stage];
    if (!module) throw new Error(`no handler module for stage ${fn.stage}`);
    const deps: StageDeps = { store, models: registry };
    handlers.set(
      arn,
      module.createHandler(() => deps),
    );
  }

  const progress = options.onProgress ?? (() => {});
  let fatal: Error | undefined;
  const invoke = async (request: unknown) => {
    const { FunctionName, Payload } = request as { FunctionName: string; Payload: unknown };
    const fn = functions.get(FunctionName);
    const handler = handlers.get(FunctionName);
    if (!fn || !handler) throw new Error(`the definition invokes an unknown function ${FunctionName}`);
    const started = Date.now();
    const shard = (Payload as { shard?: string }).shard ?? '';
    try {
      const result = await handler(Payload);
      if (fn.stage === 'split') {
        const split = SplitResult.parse(result);
        progress({ type: 'split', runId: split.runId, shards: split.shards.length, records: split.records });
      } else
        progress({
          type: 'stage',
          stage: fn.stage,
          shard,
          records: (result as { records?: number }).records ?? 0,
          ms: Date.now() - started,
        });
      return { StatusCode: 200, Payload: result } as never;
    } catch (error) {
      const name = (error as Error).name;
      // These fail the execution; its error then says only the name, so keep the message to report.
      if (name === 'ModelConfigError' || fn.stage === 'split' || fn.stage === 'merge')
        fatal ??= error as Error;
      progress({ type: 'stage-error', stage: fn.stage, shard, error: name });
      throw error;
    }
  };

  const states = definition.States as Json;
  const taskStates = lambdaTaskStates(states);
  const runName = `local-${etag.slice(0, 16)}`;
  const executionId = `arn:${LOCAL_ENV.partition}:states:${LOCAL_ENV.region}:${LOCAL_ENV.account}:execution:SaferInstruct:${runName}`;
  const input = { inputKey, etag };
  const machine = new StateMachine(definition as never, { validationOptions: { checkArn: false } });
  const execution = machine.run(input, {
    overrides: {
      taskResourceLocalHandlers: Object.fromEntries(taskStates.map((name) => [name, invoke])),
      ...(options.retryIntervalMs === undefined
        ? {}
        : {
            retryIntervalOverrides: Object.fromEntries(
              taskStates.map((n) => [n, options.retryIntervalMs as number]),
            ),
          }),
    },
    context: {
      Execution: { Id: executionId, Name: runName, Input: input, StartTime: new Date().toISOString() },
    },
  });
  try {
    const output = (await execution.result.catch((error: unknown) => {
      throw fatal ?? error;
    })) as Json;
    if (output.duplicate === true) {
      const runId = String(output.runId);
      return { runId, duplicate: true, pairs: 0, rejects: 0, pairsPath: '', rejectsPath: '', reportPath: '' };
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
    return { runId: merged.runId, duplicate: false, pairs: merged.pairs, rejects: merged.rejects, ...paths };
  } finally {
    await owned?.closeAll();
  }
}
