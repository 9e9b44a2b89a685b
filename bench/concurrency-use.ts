import type { Bench, BenchRow } from './bench.js';
import { type DriveOptions, driveCalls } from './quota-use.js';

/** Options of {@link concurrencyUse}; the defaults are the measured case, smaller ones prove the harness. */
export interface ConcurrencyUseOptions extends Omit<DriveOptions, 'requestsPerMinute' | 'maxConcurrency'> {
  /** The run's `limits` `maxConcurrency`: the C of the ideal throughput C / L. */
  readonly maxConcurrency: number;
}

const CONCURRENCY_CASE: ConcurrencyUseOptions = {
  latencyMs: 200,
  maxConcurrency: 16,
  // 32 shard slots wait on 16 governor slots, so the governor, not the shards, bounds concurrency.
  concurrency: 4,
  callConcurrency: 8,
  seconds: 6,
  warmupSeconds: 1,
};

const round = (n: number, digits = 3) => Number(n.toFixed(digits));

/**
 * Issue 8, measure 2: with no quota, the throughput the governed call path reaches as a share of the
 * ideal C / L, C its `maxConcurrency` and L the fake's latency.
 */
export const concurrencyUse = {
  name: 'concurrency-use',
  async run(overrides: Partial<ConcurrencyUseOptions> = {}): Promise<BenchRow[]> {
    const options = { ...CONCURRENCY_CASE, ...overrides };
    const tally = await driveCalls(options);
    const perSecond = tally.steady.answered / tally.steady.seconds;
    const ideal = options.maxConcurrency / (options.latencyMs / 1000);
    const ratio = perSecond / ideal;
    const callMs =
      tally.steady.attempts === 0 ? 0 : (tally.steady.attemptSeconds / tally.steady.attempts) * 1000;
    return [
      {
        bench: 'concurrency-use',
        case: `C ${options.maxConcurrency}, L ${options.latencyMs} ms, ${options.concurrency}x${options.callConcurrency} calls`,
        figures: {
          'ideal /s': round(ideal, 1),
          'achieved /s': round(perSecond, 1),
          ratio: round(ratio),
          // The latency the caller saw, and by Little's law the calls it kept in flight: a ratio below
          // target with C in flight is per-call overhead (SDK, event loop), not the governor.
          'call ms': round(callMs, 1),
          'in flight': round((perSecond * callMs) / 1000, 2),
          calls: tally.calls,
          answered: tally.answered,
          lost: tally.lost,
          attempts: tally.attempts,
          throttled: tally.throttled,
          'wall s': round(tally.wallSeconds, 1),
        },
        target: 'ratio >= 0.9, none lost',
        met: ratio >= 0.9 && tally.lost === 0 && tally.answered === tally.calls,
      },
    ];
  },
} satisfies Bench;
