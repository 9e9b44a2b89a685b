import { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import { parseConfig } from '../lib/pipeline/config.js';
import { ModelThrottledError } from '../lib/pipeline/errors.js';
import { BedrockModelClient } from '../lib/pipeline/models/bedrock.js';
import { governedBy, mapLimit } from '../lib/pipeline/models/calls.js';
import type { RetryPolicy } from '../lib/pipeline/models/governor.js';
import { GovernorPool } from '../lib/pipeline/models/governor-pool.js';
import { startBedrockFake } from '../test/support/bedrock-fake.js';
import type { Bench, BenchRow } from './bench.js';

const MODEL_ID = 'anthropic.claude-3-haiku-20240307-v1:0';
const SPEC = `bedrock:${MODEL_ID}`;
const REQUEST = { system: 'Answer briefly.', prompt: 'Say something kind.', maxTokens: 64, temperature: 0 };

/** How {@link driveCalls} loads the fake Bedrock endpoint. */
export interface DriveOptions {
  /** The fake's delay before each answer. */
  readonly latencyMs: number;
  /** The quota the fake enforces and the run's `limits` declare; undefined = none. */
  readonly requestsPerMinute?: number;
  /** The run's `limits` `maxConcurrency`; undefined = `callConcurrency * concurrency`. */
  readonly maxConcurrency?: number;
  /** Shards calling at once, all from this process (the local engine). */
  readonly concurrency: number;
  /** Calls in flight per shard, as the shard stage's `mapLimit`. */
  readonly callConcurrency: number;
  /** New calls start until this many seconds have passed; calls in flight are then waited for. */
  readonly seconds: number;
  /** Seconds at the start left out of the steady-state figures. */
  readonly warmupSeconds: number;
  /** Overrides of the run's retry policy (the reduced variants shorten the backoff). */
  readonly retry?: Partial<RetryPolicy>;
}

/** What a drive made: every call's fate, and the steady-state window's counts. */
export interface CallTally {
  /** Calls started; each ends answered or lost. */
  readonly calls: number;
  readonly answered: number;
  /** Calls that failed for good (retries spent, or any other error). */
  readonly lost: number;
  /** Requests sent, retries included. */
  readonly attempts: number;
  readonly throttled: number;
  /**
   * Within the steady-state window: calls answered, requests sent, requests throttled, and the seconds
   * those requests took, summed (their mean is the latency the caller saw).
   */
  readonly steady: {
    readonly seconds: number;
    answered: number;
    attempts: number;
    throttled: number;
    attemptSeconds: number;
  };
  /** 200s and quota 429s the fake itself counted, to check the client-side counts. */
  readonly fakeAnswered: number;
  readonly fakeQuotaThrottled: number;
  /** From the first call to the last answer. */
  readonly wallSeconds: number;
}

/**
 * Drives model calls against the local Bedrock fake the way a local run does: one GovernorPool shared
 * by every shard, the run's `limits` and `retry`, `governedBy` around each call, and `mapLimit` of
 * `callConcurrency` per shard. A call that fails for good is counted lost instead of failing its shard.
 */
export async function driveCalls(options: DriveOptions): Promise<CallTally> {
  const { latencyMs, requestsPerMinute, maxConcurrency, concurrency, callConcurrency, seconds } = options;
  const fake = await startBedrockFake({ latencyMs, requestsPerMinute });
  // As the pipeline's default client: one attempt per call, the governor owns retries.
  const client = new BedrockRuntimeClient({
    endpoint: fake.url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDBENCH', secretAccessKey: 'bench-secret' },
    maxAttempts: 1,
    requestHandler: { requestTimeout: 120_000 },
  });
  try {
    const model = new BedrockModelClient({ spec: SPEC, modelId: MODEL_ID, client });
    const config = parseConfig({
      models: { induce: SPEC, filter: SPEC, respond: SPEC, evaluate: SPEC },
      concurrency,
      callConcurrency,
      limits: { [SPEC]: { requestsPerMinute, maxConcurrency } },
      retry: options.retry ?? {},
    });
    const governor = new GovernorPool({ sharedByShards: true }).get(SPEC, config);
    const stats = { retries: 0, throttled: 0 };
    const governed = governedBy(governor, stats);

    const started = Date.now();
    const elapsed = () => (Date.now() - started) / 1000;
    const inWindow = (t: number) => t >= options.warmupSeconds && t < seconds;
    const steady = {
      seconds: seconds - options.warmupSeconds,
      answered: 0,
      attempts: 0,
      throttled: 0,
      attemptSeconds: 0,
    };
    let calls = 0;
    let answered = 0;
    let lost = 0;
    let attempts = 0;
    let throttled = 0;
    let lastAnswer = 0;
    const invoke = async () => {
      attempts++;
      const sent = elapsed();
      try {
        return await model.generate(REQUEST);
      } catch (error) {
        if (error instanceof ModelThrottledError) {
          throttled++;
          if (inWindow(elapsed())) steady.throttled++;
        }
        throw error;
      } finally {
        const t = elapsed();
        if (inWindow(t)) {
          steady.attempts++;
          steady.attemptSeconds += t - sent;
        }
      }
    };
    const call = async () => {
      if (elapsed() >= seconds) return;
      calls++;
      try {
        await governed(REQUEST, invoke);
        answered++;
        lastAnswer = elapsed();
        if (inWindow(lastAnswer)) steady.answered++;
      } catch {
        lost++;
      }
    };
    // No shard can start more calls than its slots can send back to back in the time allowed.
    const perShard = Math.ceil((callConcurrency * seconds * 1000) / Math.max(1, latencyMs)) + callConcurrency;
    const items = Array.from({ length: perShard }, (_, i) => i);
    await Promise.all(Array.from({ length: concurrency }, () => mapLimit(items, callConcurrency, call)));
    return {
      calls,
      answered,
      lost,
      attempts,
      throttled,
      steady,
      fakeAnswered: fake.answered,
      fakeQuotaThrottled: fake.quotaThrottled,
      wallSeconds: Math.max(lastAnswer, elapsed()),
    };
  } finally {
    client.destroy();
    await fake.close();
  }
}

const round = (n: number, digits = 3) => Number(n.toFixed(digits));

/** Options of {@link quotaUse}; the defaults are the measured case, smaller ones prove the harness. */
export interface QuotaUseOptions extends Omit<DriveOptions, 'maxConcurrency'> {
  readonly requestsPerMinute: number;
}

const QUOTA_CASE: QuotaUseOptions = {
  latencyMs: 50,
  requestsPerMinute: 600,
  // 16 calls in flight could send 320 requests a second at 50 ms: far above the quota's 10.
  concurrency: 4,
  callConcurrency: 4,
  seconds: 100,
  warmupSeconds: 10,
};

/**
 * Issue 8, measure 1: the share of a per-minute request quota (enforced by the fake) the governed call
 * path uses in its steady state, with every call answered and few requests throttled.
 */
export const quotaUse = {
  name: 'quota-use',
  async run(overrides: Partial<QuotaUseOptions> = {}): Promise<BenchRow[]> {
    const options = { ...QUOTA_CASE, ...overrides };
    const tally = await driveCalls(options);
    const perMinute = (tally.steady.answered / tally.steady.seconds) * 60;
    const ratio = perMinute / options.requestsPerMinute;
    const throttledShare = tally.steady.attempts === 0 ? 0 : tally.steady.throttled / tally.steady.attempts;
    return [
      {
        bench: 'quota-use',
        case: `${options.requestsPerMinute} rpm, ${options.latencyMs} ms, ${options.concurrency}x${options.callConcurrency} calls`,
        figures: {
          'quota rpm': options.requestsPerMinute,
          'achieved rpm': round(perMinute, 1),
          ratio: round(ratio),
          'throttled %': round(throttledShare * 100, 2),
          calls: tally.calls,
          answered: tally.answered,
          lost: tally.lost,
          attempts: tally.attempts,
          throttled: tally.throttled,
          'wall s': round(tally.wallSeconds, 1),
        },
        target: 'ratio >= 0.9, none lost, < 5% throttled after warm-up',
        met: ratio >= 0.9 && tally.lost === 0 && tally.answered === tally.calls && throttledShare < 0.05,
      },
    ];
  },
} satisfies Bench;
