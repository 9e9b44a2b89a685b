import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as dedupHandler from '../../lambdas/dedup.js';
import * as evaluateHandler from '../../lambdas/evaluate.js';
import * as filterHandler from '../../lambdas/filter.js';
import * as induceHandler from '../../lambdas/induce.js';
import * as mergeHandler from '../../lambdas/merge.js';
import * as respondHandler from '../../lambdas/respond.js';
import * as splitHandler from '../../lambdas/split.js';
import { executeLocally, type LocalEvent } from '../../lib/local/run-local.js';
import { batchKey } from '../../lib/pipeline/batch/batch-service.js';
import type { StageDeps } from '../../lib/pipeline/deps.js';
import { ModelThrottledError } from '../../lib/pipeline/errors.js';
import {
  outputKey,
  shardKey,
  shardRejectsKey,
  shardStatsKey,
  splitRejectsKey,
  splitStatsKey,
} from '../../lib/pipeline/keys.js';
import { emptyStats } from '../../lib/pipeline/ledger.js';
import {
  defaultTelemetry,
  figuresOfWrite,
  METRICS_NAMESPACE,
  type Observed,
  observe,
  RUN_COMPLETED,
  RunCompletedDetail,
  RunCompletion,
  type Telemetry,
} from '../../lib/pipeline/observability.js';
import { MergeResult, ShardResult, SplitResult, type StageStats } from '../../lib/pipeline/schemas.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { FakeModel, fakeRegistry } from '../support/fake-model.js';
import { fakeConfig } from '../support/pipeline.js';
import { tempDir } from '../support/temp.js';

/** A word in the test texts that no log line or metric may ever carry. */
const SECRET = 'Quokkasnatch7731';
const PRICED = { prices: { 'bedrock:fake': { inputPer1k: 0.001, outputPer1k: 0.002 } } };

// biome-ignore lint/suspicious/noExplicitAny: log lines and EMF records are untyped JSON, read by path.
type Json = any;

/**
 * Powertools as a Lambda function has it, printing to stdout and stderr, which the test captures:
 * everything the log group would receive.
 */
function capturedTelemetry() {
  const chunks: string[] = [];
  const capture = (chunk: unknown) => {
    chunks.push(String(chunk));
    return true;
  };
  vi.spyOn(process.stdout, 'write').mockImplementation(capture as never);
  vi.spyOn(process.stderr, 'write').mockImplementation(capture as never);
  const telemetry: Telemetry = {
    logger: new Logger({ serviceName: 'test-service' }),
    metrics: new Metrics({ namespace: METRICS_NAMESPACE, serviceName: 'test-service' }),
  };
  const output = () => chunks.join('');
  const lines = (): Json[] =>
    output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line));
  return {
    telemetry,
    output,
    logs: () => lines().filter((line) => !('_aws' in line)),
    emf: () => lines().filter((line) => '_aws' in line),
  };
}

afterEach(() => {
  vi.restoreAllMocks();
});

const stats = (overrides: Partial<StageStats>): StageStats => ({ ...emptyStats(), ...overrides });

describe('observe', () => {
  it('publishes records in, out and rejected, model calls, tokens, throttles and cost from the stats a stage writes', async () => {
    // Prepare
    const { telemetry, emf } = capturedTelemetry();
    const addMetric = vi.spyOn(telemetry.metrics, 'addMetric');
    const store = new FsStore(tempDir());
    const written = stats({
      in: 10,
      out: 7,
      rejected: 3,
      calls: 12,
      inputTokens: 900,
      outputTokens: 300,
      costUsd: 0.0042,
      throttled: 2,
    });
    const handler = observe(
      'filter',
      () => ({ store, telemetry }),
      async (_event, deps) => {
        await deps.store.put(shardStatsKey('run-1', '00003', 'filter'), JSON.stringify(written));
        return { runId: 'run-1', shard: '00003', records: 7 };
      },
    );

    // Act
    await handler({ runId: 'run-1', shard: '00003' });

    // Assess
    expect(
      Object.fromEntries(addMetric.mock.calls.map(([name, unit, value]) => [name, [value, unit]])),
    ).toEqual({
      RecordsIn: [10, 'Count'],
      RecordsOut: [7, 'Count'],
      Rejected: [3, 'Count'],
      ModelCalls: [12, 'Count'],
      InputTokens: [900, 'Count'],
      OutputTokens: [300, 'Count'],
      Throttled: [2, 'Count'],
      CostUsd: [0.0042, 'None'],
    });
    const [record, ...more] = emf();
    expect(more).toEqual([]);
    expect(record._aws.CloudWatchMetrics).toEqual([
      expect.objectContaining({ Namespace: 'SaferInstruct', Dimensions: [['service', 'stage']] }),
    ]);
    expect(record).toMatchObject({
      service: 'test-service',
      stage: 'filter',
      ModelCalls: 12,
      CostUsd: 0.0042,
    });
    expect(await store.get(shardStatsKey('run-1', '00003', 'filter'))).toBe(JSON.stringify(written));
  });

  it('sums the shards a dedup pass writes into one record named for the pass, with counts and no model figures', async () => {
    // Prepare
    const { telemetry, emf } = capturedTelemetry();
    const store = new FsStore(tempDir());
    const handler = observe(
      'dedup',
      () => ({ store, telemetry }),
      async (_event, deps) => {
        await deps.store.put(
          shardStatsKey('run-1', '00000', 'dedup-texts'),
          JSON.stringify(stats({ in: 10, out: 9, rejected: 1 })),
        );
        await deps.store.put(
          shardStatsKey('run-1', '00001', 'dedup-texts'),
          JSON.stringify(stats({ in: 5, out: 3, rejected: 2 })),
        );
        return { runId: 'run-1', shards: ['00000', '00001'], records: 12 };
      },
    );

    // Act
    await handler({ runId: 'run-1', field: 'text' });

    // Assess
    const records = emf();
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ stage: 'dedup-texts', RecordsIn: 15, RecordsOut: 12, Rejected: 3 });
    expect(records[0]).not.toHaveProperty('ModelCalls');
  });

  it("publishes a batch job's billed answers under the stage `batch`", async () => {
    // Prepare
    const { telemetry, emf } = capturedTelemetry();
    const store = new FsStore(tempDir());
    const job = {
      jobName: 'job-1',
      status: 'Completed',
      records: 120,
      answered: 118,
      errored: 1,
      missing: 1,
      inputTokens: 5000,
      outputTokens: 2000,
      costUsd: 0.01,
    };
    const handler = observe(
      'batch',
      () => ({ store, telemetry }),
      async (_event, deps) => {
        await deps.store.put(batchKey('run-1', 'respond', 'job-1', 'stats.json'), JSON.stringify(job));
        return job;
      },
    );

    // Act
    await handler({ action: 'join', runId: 'run-1', stage: 'respond', jobName: 'job-1' });

    // Assess
    expect(emf()).toEqual([
      expect.objectContaining({
        stage: 'batch',
        RecordsIn: 120,
        RecordsOut: 118,
        ModelCalls: 118,
        InputTokens: 5000,
        OutputTokens: 2000,
        CostUsd: 0.01,
      }),
    ]);
  });

  it('publishes nothing for a stage that was already done and wrote no stats, and still logs it', async () => {
    // Prepare
    const { telemetry, emf, logs } = capturedTelemetry();
    const store = new FsStore(tempDir());
    const handler = observe(
      'induce',
      () => ({ store, telemetry }),
      async () => ({
        runId: 'run-1',
        shard: '00002',
        records: 4,
      }),
    );

    // Act
    await handler({ runId: 'run-1', shard: '00002' });

    // Assess
    expect(emf()).toEqual([]);
    expect(logs()).toEqual([
      expect.objectContaining({
        level: 'INFO',
        message: 'stage finished',
        stage: 'induce',
        runId: 'run-1',
        shard: '00002',
        records: 4,
        metrics: {},
      }),
    ]);
  });

  it("logs a failed stage by its error's name only, counts a throttle, and rethrows", async () => {
    // Prepare
    const { telemetry, emf, logs, output } = capturedTelemetry();
    const store = new FsStore(tempDir());
    const handler = observe(
      'respond',
      () => ({ store, telemetry }),
      async () => {
        throw new ModelThrottledError(`throttled while answering "${SECRET}"`);
      },
    );

    // Act
    const act = handler({ runId: 'run-1', shard: '00001' });

    // Assess
    await expect(act).rejects.toThrow(ModelThrottledError);
    expect(emf()).toEqual([expect.objectContaining({ stage: 'respond', Throttled: 1 })]);
    expect(logs()).toEqual([
      expect.objectContaining({
        level: 'ERROR',
        message: 'stage failed',
        stage: 'respond',
        runId: 'run-1',
        shard: '00001',
        error: 'ModelThrottledError',
      }),
    ]);
    expect(output()).not.toContain(SECRET);
  });

  it('outside Lambda and without telemetry in its deps, prints nothing and hands the stage its deps untouched', async () => {
    // Prepare
    const write = vi.spyOn(process.stdout, 'write');
    const store = new FsStore(tempDir());
    const given = { store };
    let seen: unknown;
    const handler = observe(
      'merge',
      () => given,
      async (_event, deps) => {
        seen = deps;
        await deps.store.put(shardStatsKey('run-1', '00000', 'filter'), JSON.stringify(stats({ in: 1 })));
        return { runId: 'run-1' };
      },
    );

    // Act
    await handler({ runId: 'run-1' });

    // Assess
    expect(process.env.AWS_LAMBDA_FUNCTION_NAME).toBeUndefined();
    expect(seen).toBe(given);
    expect(write).not.toHaveBeenCalled();
  });

  it('turns Powertools on only in a Lambda function, once per process', () => {
    // Act
    const outside = defaultTelemetry({});
    const first = defaultTelemetry({ AWS_LAMBDA_FUNCTION_NAME: 'SaferInstruct-Induce' });
    const second = defaultTelemetry({ AWS_LAMBDA_FUNCTION_NAME: 'SaferInstruct-Induce' });

    // Assess
    expect(outside).toBeUndefined();
    expect(first?.logger).toBeInstanceOf(Logger);
    expect(first?.metrics).toBeInstanceOf(Metrics);
    expect(second).toBe(first);
  });
});

describe('figuresOfWrite', () => {
  it("reads the stats under the keys the stages write them, and nothing else of a run's objects", () => {
    // Prepare
    const body = JSON.stringify(stats({ in: 3, out: 2, rejected: 1, calls: 3 }));
    const report = JSON.stringify({
      input: { records: 3 },
      failedShards: [],
      totals: { calls: 3, costUsd: 0 },
      mode: 'on-demand',
      stages: { merge: stats({ in: 2, out: 2 }) },
    });

    // Act
    const found = (key: string, text = body) => figuresOfWrite(key, text)?.stage;

    // Assess
    expect(found(splitStatsKey('r'))).toBe('split');
    expect(found(shardStatsKey('r', '00007', 'dedup-instructions'))).toBe('dedup-instructions');
    expect(found(shardStatsKey('r', '00007', 'evaluate'))).toBe('evaluate');
    expect(found(outputKey('r', 'report.json'), report)).toBe('merge');
    expect(figuresOfWrite(shardStatsKey('r', '00007', 'evaluate'), new TextEncoder().encode(body))).toEqual({
      stage: 'evaluate',
      figures: expect.objectContaining({ RecordsIn: 3, ModelCalls: 3 }),
    });
    for (const key of [
      shardKey('r', '00007', 'evaluate'),
      shardRejectsKey('r', '00007', 'evaluate'),
      splitRejectsKey('r'),
      outputKey('r', 'pairs.jsonl'),
    ])
      expect(found(key)).toBeUndefined();
    expect(found(shardStatsKey('r', '00007', 'evaluate'), 'not json')).toBeUndefined();
  });
});

describe('the stage handlers in Lambda', () => {
  it("log ids, counts and metrics of a whole run, and never a record's text, instruction or response", async () => {
    // Prepare
    const { telemetry, emf, logs, output } = capturedTelemetry();
    const store = new FsStore(tempDir());
    const config = fakeConfig(PRICED);
    const deps: Observed<StageDeps> = { store, models: fakeRegistry(new FakeModel()), telemetry };
    const texts = [
      `Everyone who keeps a ${SECRET} is a thief and should be driven out of town.`,
      'I hope the people on the night shift get hurt on the way home tonight.',
    ];
    await store.put('incoming/texts.jsonl', texts.map((text) => JSON.stringify({ text })).join('\n'));
    const handlers = {
      split: splitHandler.createHandler(() => deps),
      dedup: dedupHandler.createHandler(() => deps),
      induce: induceHandler.createHandler(() => deps),
      filter: filterHandler.createHandler(() => deps),
      respond: respondHandler.createHandler(() => deps),
      evaluate: evaluateHandler.createHandler(() => deps),
      merge: mergeHandler.createHandler(() => deps),
    };

    // Act
    const { runId, shards } = SplitResult.parse(
      await handlers.split({ event: { inputKey: 'incoming/texts.jsonl' }, executionId: 'exec-1', config }),
    );
    await handlers.dedup({ runId, field: 'text' });
    for (const shard of shards) ShardResult.parse(await handlers.induce({ runId, shard }));
    await handlers.dedup({ runId, field: 'instruction' });
    for (const stage of ['filter', 'respond', 'evaluate'] as const)
      for (const shard of shards) await handlers[stage]({ runId, shard });
    const merged = await handlers.merge({ runId });

    // Assess
    expect(output()).not.toContain(SECRET);
    expect(output()).not.toContain('thief');
    const byStage = Object.fromEntries(emf().map((record) => [record.stage, record]));
    expect(Object.keys(byStage).sort()).toEqual(
      [
        'dedup-instructions',
        'dedup-texts',
        'evaluate',
        'filter',
        'induce',
        'merge',
        'respond',
        'split',
      ].sort(),
    );
    const induced = JSON.parse(await store.get(shardStatsKey(runId, shards[0] as string, 'induce')));
    expect(byStage.induce).toMatchObject({
      service: 'test-service',
      RecordsIn: induced.in,
      RecordsOut: induced.out,
      ModelCalls: 2,
      InputTokens: induced.inputTokens,
      OutputTokens: induced.outputTokens,
      CostUsd: induced.costUsd,
    });
    expect(byStage.induce.CostUsd).toBeGreaterThan(0);
    expect(byStage.split).toMatchObject({ RecordsIn: 2, RecordsOut: 2, Rejected: 0 });
    expect(byStage.merge).toMatchObject({ RecordsIn: 2, RecordsOut: 2, Rejected: 0 });
    expect(logs().map((line) => [line.message, line.stage])).toEqual([
      ['stage finished', 'split'],
      ['stage finished', 'dedup'],
      ...shards.map(() => ['stage finished', 'induce']),
      ['stage finished', 'dedup'],
      ...['filter', 'respond', 'evaluate'].flatMap((stage) => shards.map(() => ['stage finished', stage])),
      ['stage finished', 'merge'],
    ]);
    expect(logs().every((line) => line.runId === runId)).toBe(true);
    const report = JSON.parse(await store.get(MergeResult.parse(merged).reportKey));
    expect(RunCompletion.parse((merged as { completion: unknown }).completion)).toEqual({
      status: 'complete',
      inputRecords: 2,
      failedShards: 0,
      calls: report.totals.calls,
      costUsd: report.totals.costUsd,
      mode: 'on-demand',
    });
  });
});

describe('the Run Completed event in the local engine', () => {
  it("is recorded with the report's key figures while the execution's output stays Merge's", async () => {
    // Prepare
    const store = new FsStore(tempDir());
    const write = vi.spyOn(process.stdout, 'write');
    await store.put(
      'incoming/texts.jsonl',
      ['Everyone from that town is a thief and a liar.', 'I hope you get hurt on the way home tonight.']
        .map((text) => JSON.stringify({ text }))
        .join('\n'),
    );
    const events: LocalEvent[] = [];

    // Act
    const output = await executeLocally({
      store,
      config: fakeConfig(PRICED),
      registry: fakeRegistry(new FakeModel()),
      input: { inputKey: 'incoming/texts.jsonl' },
      executionName: 'completion',
      onEvent: (event) => events.push(event),
    });

    // Assess
    const merged = MergeResult.parse(output);
    const report = JSON.parse(await store.get(merged.reportKey));
    expect(output).toHaveProperty('completion');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ source: RUN_COMPLETED.source, detailType: RUN_COMPLETED.detailType });
    expect(RunCompletedDetail.parse(events[0]?.detail)).toEqual({
      runId: merged.runId,
      executionId: expect.stringMatching(/:execution:SaferInstruct:completion$/),
      status: 'complete',
      pairs: report.pairs,
      rejects: report.rejects,
      inputRecords: 2,
      failedShards: 0,
      calls: report.totals.calls,
      costUsd: report.totals.costUsd,
      mode: 'on-demand',
      reportKey: merged.reportKey,
    });
    expect(JSON.parse(await store.get('events/completion.jsonl'))).toEqual(events[0]);
    expect(write).not.toHaveBeenCalled();
  });
});
