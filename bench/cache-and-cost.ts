import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runLocal } from '../lib/local/run-local.js';
import type { PipelineConfig, PipelineConfigInput } from '../lib/pipeline/config.js';
import { batchPriceOf, costOf, priceOf } from '../lib/pipeline/ledger.js';
import { CallCache } from '../lib/pipeline/models/call-cache.js';
import { FsStore } from '../lib/pipeline/store/fs-store.js';
import { FakeModel, fakeRegistry } from '../test/support/fake-model.js';
import { fakeConfig } from '../test/support/pipeline.js';
import type { Bench, BenchRow } from './bench.js';
import { writeInput } from './orchestration.js';

const RECORDS = 1_000;
/** The real Bedrock model the fake model's tokens are priced as. */
const PRICED_AS = 'amazon.nova-micro-v1:0';
const TARGET_BATCH_SHARE = 0.55;

interface Tokens {
  readonly calls: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
}

/** The part of report.json this bench reads. */
interface Report {
  readonly pairs: number;
  readonly totals: { readonly calls: number };
  readonly modes: { readonly 'on-demand': Tokens; readonly batch: Tokens };
}

/** Options of the cache and cost bench; the test suite runs it small. */
export interface CacheAndCostOptions {
  /** Input records; default 1,000. */
  readonly records?: number;
}

/** The figures of a cost case: dollars per 1,000 kept pairs, and the calls behind them. */
export interface CostFigures {
  readonly pairs: number;
  readonly onDemandCalls: number;
  readonly batchCalls: number;
  readonly usdPer1kPairs: number;
}

/**
 * What a run's model calls cost at `PRICED_AS`'s list prices, per 1,000 kept pairs. The emulator prices
 * its jobs on-demand in report.json, so the batch jobs' tokens are priced here at the batch price, and
 * whatever the run still sent on-demand at the on-demand price.
 */
export function costPer1kPairs(report: Report, config: PipelineConfig): CostFigures {
  const onDemand = report.modes['on-demand'];
  const batch = report.modes.batch;
  const usd = costOf(onDemand, priceOf(PRICED_AS, config)) + costOf(batch, batchPriceOf(PRICED_AS, config));
  return {
    pairs: report.pairs,
    onDemandCalls: onDemand.calls,
    batchCalls: batch.calls,
    usdPer1kPairs: report.pairs === 0 ? 0 : (usd / report.pairs) * 1000,
  };
}

/**
 * Three local runs over the same input with an instant fake model: on-demand with a fresh call cache,
 * the same again with that cache (the cache row: model calls the second run made, target 0), and in
 * mode `batch` with a fresh cache (the cost row: dollars per 1,000 kept pairs in batch against
 * on-demand, target at most 0.55 of it).
 */
export function cacheAndCostBench(options: CacheAndCostOptions = {}): Bench {
  const records = options.records ?? RECORDS;
  return {
    name: 'cache-and-cost',
    async run(): Promise<BenchRow[]> {
      const dir = await mkdtemp(join(tmpdir(), 'bench-cache-cost-'));
      try {
        const input = await writeInput(dir, records);
        const run = async (name: string, overrides: PipelineConfigInput, cache: CallCache) => {
          const model = new FakeModel();
          const config = fakeConfig(overrides);
          const started = performance.now();
          const result = await runLocal({
            input,
            outDir: join(dir, name),
            config,
            registry: fakeRegistry(model),
            cache,
          });
          const seconds = (performance.now() - started) / 1000;
          const report = JSON.parse(await readFile(result.reportPath, 'utf8')) as Report;
          return { model, config, report, seconds };
        };
        const cache = new CallCache(new FsStore(join(dir, 'cache')));
        const first = await run('first', {}, cache);
        const second = await run('second', {}, cache);
        const batch = await run(
          'batch',
          { mode: 'batch', batch: { minRecordsPerJob: 100 } },
          new CallCache(new FsStore(join(dir, 'batch-cache'))),
        );

        const secondCalls = second.model.calls.length;
        const onDemandCost = costPer1kPairs(first.report, first.config);
        const batchCost = costPer1kPairs(batch.report, batch.config);
        const share = batchCost.usdPer1kPairs / onDemandCost.usdPer1kPairs;
        const usd = (n: number) => n.toFixed(6);
        return [
          {
            bench: 'cache',
            case: `${records} records, identical second run, same call cache`,
            figures: {
              'first calls': first.model.calls.length,
              'second calls': secondCalls,
              'second reported calls': second.report.totals.calls,
              'first s': first.seconds.toFixed(1),
              'second s': second.seconds.toFixed(1),
            },
            target: '0 model calls on the second run',
            met: secondCalls === 0 && second.report.totals.calls === 0,
          },
          {
            bench: 'cost',
            case: `${records} records priced as ${PRICED_AS}`,
            figures: {
              pairs: batchCost.pairs,
              'on-demand $/1k pairs': usd(onDemandCost.usdPer1kPairs),
              'batch $/1k pairs': usd(batchCost.usdPer1kPairs),
              'batch share': share.toFixed(3),
              'batch calls (jobs, on-demand)': `${batchCost.batchCalls}, ${batchCost.onDemandCalls}`,
              'batch s': batch.seconds.toFixed(1),
            },
            target: `batch <= ${TARGET_BATCH_SHARE} x on-demand`,
            met: onDemandCost.usdPer1kPairs > 0 && share <= TARGET_BATCH_SHARE,
          },
        ];
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/** The cache and cost bench at full size, for `npm run bench`. */
export const cacheAndCost = cacheAndCostBench();
