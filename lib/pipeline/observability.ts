import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { z } from 'zod';
import { BatchJobStats } from './batch/batch-service.js';
import { MODEL_STAGES, StageStats } from './schemas.js';
import type { PutOptions, Store } from './store/store.js';

/** The CloudWatch namespace of the pipeline's metrics. */
export const METRICS_NAMESPACE = 'SaferInstruct';
/** The service name when no POWERTOOLS_SERVICE_NAME is set. */
export const DEFAULT_SERVICE = 'safer-instruct';
/** The environment keys Powertools reads; CDK sets both on every function. */
export const POWERTOOLS_ENV = {
  service: 'POWERTOOLS_SERVICE_NAME',
  namespace: 'POWERTOOLS_METRICS_NAMESPACE',
} as const;
/** The dimension that names the stage; Powertools adds `service`. */
export const STAGE_DIMENSION = 'stage';

/** The metrics of one stage invocation, each summed over what the invocation wrote. */
export const STAGE_METRICS = [
  'RecordsIn',
  'RecordsOut',
  'Rejected',
  'ModelCalls',
  'InputTokens',
  'OutputTokens',
  'Throttled',
  'CostUsd',
] as const;
export type StageMetric = (typeof STAGE_METRICS)[number];
/** What a stage invocation measured; a stage without a model has no model figures. */
export type StageFigures = Partial<Record<StageMetric, number>>;

/** The `stage` dimension of Bedrock batch jobs' figures: the jobs of every model stage. */
export const BATCH_STAGE = 'batch';

/** The completion event the workflow puts on the default event bus after Merge. */
export const RUN_COMPLETED = { source: 'safer-instruct', detailType: 'Run Completed' } as const;

/** A run's key figures from its report, which the merge handler adds to Merge's output for the event. */
export const RunCompletion = z.object({
  /** `partial` when some shards failed after every retry: their records are `shard-failed` rejects. */
  status: z.enum(['complete', 'partial']),
  inputRecords: z.number().int().nonnegative(),
  failedShards: z.number().int().nonnegative(),
  /** Paid model calls, on-demand and batch. */
  calls: z.number().int().nonnegative(),
  costUsd: z.number().nonnegative(),
  mode: z.string(),
});
export type RunCompletion = z.infer<typeof RunCompletion>;

/** The `detail` of a `Run Completed` event; the state machine builds it from Merge's output by JSONPath. */
export const RunCompletedDetail = RunCompletion.extend({
  runId: z.string(),
  executionId: z.string(),
  pairs: z.number().int().nonnegative(),
  rejects: z.number().int().nonnegative(),
  reportKey: z.string(),
});
export type RunCompletedDetail = z.infer<typeof RunCompletedDetail>;

/** The part of report.json the completion and merge's metrics read. */
const ReportFigures = z.object({
  input: z.object({ records: z.number() }),
  failedShards: z.array(z.unknown()),
  totals: z.object({ calls: z.number(), costUsd: z.number() }),
  mode: z.string(),
  stages: z.object({ merge: StageStats }),
});

const completionOf = (report: z.infer<typeof ReportFigures>): RunCompletion => ({
  status: report.failedShards.length === 0 ? 'complete' : 'partial',
  inputRecords: report.input.records,
  failedShards: report.failedShards.length,
  calls: report.totals.calls,
  costUsd: report.totals.costUsd,
  mode: report.mode,
});

/**
 * Adds the run's key figures, read from the report merge wrote, to merge's result: Merge's output is all
 * the completion event's JSONPath can read. Consumers that parse MergeResult drop the extra key.
 */
export async function withCompletion<R extends { reportKey: string }>(
  result: R,
  store: Pick<Store, 'get'>,
): Promise<R & { completion: RunCompletion }> {
  const report = ReportFigures.parse(JSON.parse(await store.get(result.reportKey)));
  return { ...result, completion: completionOf(report) };
}

/** Where a stage invocation's logs and metrics go. */
export interface Telemetry {
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/** Dependencies that may name their own telemetry (tests pass spies); absent, `defaultTelemetry` decides. */
export type Observed<D> = D & { readonly telemetry?: Telemetry };

let processTelemetry: Telemetry | undefined;

/**
 * Powertools in a Lambda function, built once per process: JSON logs and EMF metrics on stdout, which
 * Lambda sends to the function's own log group. Elsewhere (the local engine, the CLI, tests) none, so a
 * local run prints no EMF.
 */
export function defaultTelemetry(
  env: Record<string, string | undefined> = process.env,
): Telemetry | undefined {
  if (!env.AWS_LAMBDA_FUNCTION_NAME) return undefined;
  processTelemetry ??= {
    logger: new Logger({ serviceName: env[POWERTOOLS_ENV.service] || DEFAULT_SERVICE }),
    metrics: new Metrics({
      namespace: env[POWERTOOLS_ENV.namespace] || METRICS_NAMESPACE,
      serviceName: env[POWERTOOLS_ENV.service] || DEFAULT_SERVICE,
    }),
  };
  return processTelemetry;
}

const MODEL_STAGE_NAMES: ReadonlySet<string> = new Set(MODEL_STAGES);

/** The figures of a stage's stats: counts always, model figures for a model stage. */
function figuresOfStats(stage: string, stats: StageStats): StageFigures {
  const counts = { RecordsIn: stats.in, RecordsOut: stats.out, Rejected: stats.rejected };
  if (!MODEL_STAGE_NAMES.has(stage)) return counts;
  return {
    ...counts,
    ModelCalls: stats.calls,
    InputTokens: stats.inputTokens,
    OutputTokens: stats.outputTokens,
    Throttled: stats.throttled,
    CostUsd: stats.costUsd,
  };
}

/** A batch job's figures: records sent and answered, and the answers Bedrock billed. */
const figuresOfBatchJob = (job: BatchJobStats): StageFigures => ({
  RecordsIn: job.records,
  RecordsOut: job.answered,
  ModelCalls: job.answered,
  InputTokens: job.inputTokens,
  OutputTokens: job.outputTokens,
  CostUsd: job.costUsd,
});

/** The JSON of a body, decoded only once its key is known to be one of the books. */
const parsedJson = (body: string | Uint8Array): unknown => {
  try {
    return JSON.parse(typeof body === 'string' ? body : Buffer.from(body).toString('utf8'));
  } catch {
    return undefined;
  }
};

// The keys of keys.ts and batchKey, as a stage writes them; a unit test holds them to those functions.
const SPLIT_STATS = /^runs\/[^/]+\/split\.stats\.json$/;
const SHARD_STATS = /^runs\/[^/]+\/shards\/[^/]+\/([a-z-]+)\.stats\.json$/;
const BATCH_JOB_STATS = /^runs\/[^/]+\/batch\/[a-z]+\/[^/]+\/stats\.json$/;
const REPORT = /^runs\/[^/]+\/output\/report\.json$/;

/**
 * The figures a write carries, when it is a stage's books: split's or a shard stage's stats, a batch job's
 * stats, or merge's report. Stats are written last, once the stage's work is done, so a stage that was
 * skipped as already done (a resumed run) writes none and counts nothing twice.
 */
export function figuresOfWrite(
  key: string,
  body: string | Uint8Array,
): { stage: string; figures: StageFigures } | undefined {
  const shard = SHARD_STATS.exec(key);
  const stage = SPLIT_STATS.test(key) ? 'split' : shard?.[1];
  if (stage !== undefined) {
    const stats = StageStats.safeParse(parsedJson(body));
    return stats.success ? { stage, figures: figuresOfStats(stage, stats.data) } : undefined;
  }
  if (BATCH_JOB_STATS.test(key)) {
    const job = BatchJobStats.safeParse(parsedJson(body));
    return job.success ? { stage: BATCH_STAGE, figures: figuresOfBatchJob(job.data) } : undefined;
  }
  if (REPORT.test(key)) {
    const report = ReportFigures.safeParse(parsedJson(body));
    return report.success
      ? { stage: 'merge', figures: figuresOfStats('merge', report.data.stages.merge) }
      : undefined;
  }
  return undefined;
}

/** Sums figures by stage: a dedup pass writes the stats of many shards in one invocation. */
function addFigures(into: Map<string, StageFigures>, stage: string, figures: StageFigures): void {
  const sum = into.get(stage) ?? {};
  for (const [name, value] of Object.entries(figures) as [StageMetric, number][])
    sum[name] = (sum[name] ?? 0) + value;
  into.set(stage, sum);
}

/** The store, passing every call through, that notes each stage's books as they are written. */
class BookkeepingStore implements Store {
  constructor(
    private readonly store: Store,
    private readonly note: (key: string, body: string | Uint8Array) => void,
  ) {}
  get(key: string) {
    return this.store.get(key);
  }
  tryGet(key: string) {
    return this.store.tryGet(key);
  }
  getStream(key: string) {
    return this.store.getStream(key);
  }
  async put(key: string, body: string | Uint8Array, options?: PutOptions) {
    await this.store.put(key, body, options);
    this.note(key, body);
  }
  putStream(key: string, body: AsyncIterable<string | Uint8Array>, options?: PutOptions) {
    return this.store.putStream(key, body, options);
  }
  putIfAbsent(key: string, body: string) {
    return this.store.putIfAbsent(key, body);
  }
  head(key: string) {
    return this.store.head(key);
  }
}

/** The invocation context Lambda passes; the local engine passes none. */
export type LambdaContext = Parameters<Logger['addContext']>[0];

// Pointers only: payloads and results carry ids and counts, and these are the only keys logged.
const ID_KEYS = ['runId', 'shard', 'field', 'action', 'jobName'] as const;
const COUNT_KEYS = ['records', 'pairs', 'rejects', 'answered', 'onDemand'] as const;

/** The ids and counts of a payload or a result, and nothing else of it. */
function pointersOf(value: unknown): Record<string, string | number> {
  if (value === null || typeof value !== 'object') return {};
  const from = value as Record<string, unknown>;
  const picked: Record<string, string | number> = {};
  for (const key of ID_KEYS) {
    const v = from[key];
    if (typeof v === 'string' && v.length <= 200) picked[key] = v;
  }
  for (const key of COUNT_KEYS) if (typeof from[key] === 'number') picked[key] = from[key];
  // The batch step's payload names its model stage; `stage` in a log line is the function's.
  if (typeof from.stage === 'string' && MODEL_STAGE_NAMES.has(from.stage)) picked.modelStage = from.stage;
  return picked;
}

/** Publishes one stage's figures as one EMF record; metrics must never fail the stage. */
function publish(telemetry: Telemetry, stage: string, figures: StageFigures): void {
  const entries = Object.entries(figures) as [StageMetric, number][];
  if (entries.length === 0) return;
  try {
    telemetry.metrics.addDimension(STAGE_DIMENSION, stage);
    for (const [name, value] of entries)
      telemetry.metrics.addMetric(name, name === 'CostUsd' ? MetricUnit.NoUnit : MetricUnit.Count, value);
    telemetry.metrics.publishStoredMetrics();
  } catch (error) {
    telemetry.logger.warn('metrics not published', { stage, error: (error as Error).name });
  }
}

/**
 * Wraps a stage handler: in Lambda (or with `telemetry` in its deps) it logs one JSON line per invocation
 * (stage, ids, counts, duration; an error by its name only) and publishes the stage's metrics, read from
 * the books the stage writes (its StageStats, a batch job's stats, merge's report) as it writes them.
 * Elsewhere it calls the stage with its deps untouched. Logs never carry a payload or a record: only the
 * ids and counts of `pointersOf`, so no text, instruction or response reaches the log group.
 */
export function observe<D extends object, R>(
  stage: string,
  deps: () => Observed<D>,
  run: (event: unknown, deps: D) => Promise<R>,
): (event: unknown, context?: LambdaContext) => Promise<R> {
  return async (event, context) => {
    const given = deps();
    const telemetry = given.telemetry ?? defaultTelemetry();
    if (!telemetry) return run(event, given);

    const books = new Map<string, StageFigures>();
    const note = (key: string, body: string | Uint8Array) => {
      const found = figuresOfWrite(key, body);
      if (found) addFigures(books, found.stage, found.figures);
    };
    const store = (given as { store?: Store }).store;
    const watched = store ? ({ ...given, store: new BookkeepingStore(store, note) } as D) : given;
    if (context) telemetry.logger.addContext(context);
    const started = Date.now();
    const ids = pointersOf(event);
    try {
      const result = await run(event, watched);
      telemetry.logger.info('stage finished', {
        stage,
        ...ids,
        ...pointersOf(result),
        ms: Date.now() - started,
        metrics: Object.fromEntries(books),
      });
      return result;
    } catch (error) {
      const name = error instanceof Error ? error.name : typeof error;
      // The governor's count of a shard that ends throttled is lost with its stats: count the failure.
      if (name === 'ModelThrottledError') addFigures(books, stage, { Throttled: 1 });
      // The name only: a message may quote a model's answer; Step Functions keeps the cause.
      telemetry.logger.error('stage failed', { stage, ...ids, ms: Date.now() - started, error: name });
      throw error;
    } finally {
      // Also when the invocation failed: a dedup pass keeps the shards it finished, and a retry skips them.
      for (const [name, figures] of books) publish(telemetry, name, figures);
    }
  };
}
