import { describe, expect, it, vi } from 'vitest';
import {
  ConfigError,
  JudgeAnswerError,
  ModelConfigError,
  ModelRefusedError,
  ModelRequestError,
  ModelThrottledError,
  ModelTransientError,
} from '../../lib/pipeline/errors.js';
import {
  type Clock,
  type GovernorLimits,
  RateGovernor,
  type RetryPolicy,
} from '../../lib/pipeline/models/governor.js';

const retry: RetryPolicy = { attempts: 10, transientAttempts: 4, baseDelayMs: 1000, maxDelayMs: 60_000 };
const usage = { inputTokens: 10, outputTokens: 5 };

/**
 * Virtual time: `sleep` queues a timer, and `settle` fires timers one at a time, earliest first, each
 * once every microtask has run, so any number of concurrent sleepers see a consistent clock.
 */
class VirtualClock implements Clock {
  private time = 0;
  private order = 0;
  private readonly timers: { at: number; order: number; fire: () => void }[] = [];

  constructor(private readonly draw: () => number = () => 0.5) {}

  now(): number {
    return this.time;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((fire) =>
      this.timers.push({ at: this.time + Math.max(0, ms), order: this.order++, fire }),
    );
  }

  random(): number {
    return this.draw();
  }

  /** Runs virtual time forward until `work` settles; throws if it waits on nothing. */
  async settle<T>(work: Promise<T>): Promise<T> {
    let settled = false;
    work.then(
      () => {
        settled = true;
      },
      () => {
        settled = true;
      },
    );
    for (;;) {
      await new Promise((resolve) => setImmediate(resolve));
      if (settled) return work;
      this.timers.sort((a, b) => a.at - b.at || a.order - b.order);
      const next = this.timers.shift();
      if (!next) throw new Error('deadlock: the work is pending with no timer left to fire');
      this.time = next.at;
      next.fire();
    }
  }
}

/** Random draws in order, repeating the last. */
function scripted(...draws: number[]): () => number {
  let i = 0;
  return () => draws[Math.min(i++, draws.length - 1)] ?? 0;
}

/** A model call that takes `durationMs` of virtual time, counting how many run at once. */
function fakeModel(clock: VirtualClock, durationMs = 10) {
  const stats = { calls: 0, running: 0, maxRunning: 0, startedAt: [] as number[] };
  const call = async () => {
    stats.calls++;
    stats.running++;
    stats.maxRunning = Math.max(stats.maxRunning, stats.running);
    stats.startedAt.push(clock.now());
    await clock.sleep(durationMs);
    stats.running--;
    return { text: 'ok', usage };
  };
  return { stats, call };
}

/** A call that fails with each error in turn, then succeeds. */
function failing(errors: Error[]) {
  let calls = 0;
  const call = async () => {
    const error = errors[calls++];
    if (error) throw error;
    return 'ok';
  };
  return { call, calls: () => calls };
}

function governorOn(
  clock: VirtualClock,
  limits: Partial<GovernorLimits> = {},
  policy: Partial<RetryPolicy> = {},
) {
  return new RateGovernor({ maxConcurrency: 8, ...limits }, { ...retry, ...policy }, clock);
}

const throttled = () => new ModelThrottledError('429 Too Many Requests');

describe('RateGovernor concurrency', () => {
  it('halves the concurrency limit when a call is throttled', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { maxConcurrency: 8 }, { attempts: 1 });

    // Act
    const error = await clock
      .settle(governor.run(failing([throttled()]).call, { reserveTokens: 0 }))
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBeInstanceOf(ModelThrottledError);
    expect(governor.concurrency).toBe(4);
  });

  it('grows the limit back by about one per `limit` successes, up to maxConcurrency', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { maxConcurrency: 8 }, { attempts: 1 });
    await clock
      .settle(governor.run(failing([throttled()]).call, { reserveTokens: 0 }))
      .catch(() => undefined);
    const succeed = (times: number) =>
      clock.settle(
        Promise.all(
          Array.from({ length: times }, () => governor.run(async () => 'ok', { reserveTokens: 0 })),
        ),
      );

    // Act
    await succeed(4);
    const afterFour = governor.concurrency;
    await succeed(19);
    const afterTwentyThree = governor.concurrency;
    await succeed(10);

    // Assess
    expect(afterFour).toBeCloseTo(5, 0);
    expect(Math.floor(afterTwentyThree)).toBe(7);
    expect(governor.concurrency).toBe(8);
  });

  it('halves once for a burst of simultaneous throttles within the cooldown', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { maxConcurrency: 8 }, { attempts: 1, baseDelayMs: 1000 });
    const overloaded = async () => {
      await clock.sleep(100);
      throw throttled();
    };

    // Act
    await clock.settle(
      Promise.allSettled(Array.from({ length: 8 }, () => governor.run(overloaded, { reserveTokens: 0 }))),
    );

    // Assess
    expect(governor.concurrency).toBe(4);
  });

  it('halves again for a throttle after the cooldown, never below minConcurrency', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(
      clock,
      { maxConcurrency: 8, minConcurrency: 3 },
      { attempts: 1, baseDelayMs: 1000 },
    );
    const throttleOnce = () =>
      clock.settle(governor.run(failing([throttled()]).call, { reserveTokens: 0 })).catch(() => undefined);

    // Act
    await throttleOnce();
    const afterFirst = governor.concurrency;
    await clock.settle(clock.sleep(1000));
    await throttleOnce();
    const afterSecond = governor.concurrency;
    await clock.settle(clock.sleep(1000));
    await throttleOnce();

    // Assess
    expect(afterFirst).toBe(4);
    expect(afterSecond).toBe(3);
    expect(governor.concurrency).toBe(3);
  });

  it('never runs more calls at once than the floor of the limit', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { maxConcurrency: 3 });
    const model = fakeModel(clock, 50);

    // Act
    await clock.settle(
      Promise.all(Array.from({ length: 20 }, () => governor.run(model.call, { reserveTokens: 0 }))),
    );

    // Assess
    expect(model.stats.calls).toBe(20);
    expect(model.stats.maxRunning).toBe(3);
    expect(governor.inFlight).toBe(0);
  });

  it('admits no new call until the calls in flight fall below a cut limit', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { maxConcurrency: 4 }, { attempts: 1 });
    const admitted: { inFlight: number; limit: number; at: number }[] = [];
    const watched = (durationMs: number, fail: boolean) => async () => {
      admitted.push({
        inFlight: governor.inFlight,
        limit: Math.floor(governor.concurrency),
        at: clock.now(),
      });
      await clock.sleep(durationMs);
      if (fail) throw throttled();
      return 'ok';
    };
    const first = [watched(10, true), watched(1000, false), watched(1000, false), watched(1000, false)];
    const later = Array.from({ length: 4 }, () => watched(10, false));

    // Act
    await clock.settle(
      Promise.allSettled([...first, ...later].map((call) => governor.run(call, { reserveTokens: 0 }))),
    );

    // Assess
    expect(admitted).toHaveLength(8);
    for (const entry of admitted) expect(entry.inFlight).toBeLessThanOrEqual(entry.limit);
    for (const entry of admitted.slice(4)) expect(entry.at).toBeGreaterThanOrEqual(1000);
  });

  it('serves waiting calls in arrival order', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { maxConcurrency: 1 });
    const order: number[] = [];
    const numbered = (n: number) => async () => {
      order.push(n);
      await clock.sleep(10);
      return n;
    };

    // Act
    await clock.settle(
      Promise.all([0, 1, 2, 3, 4].map((n) => governor.run(numbered(n), { reserveTokens: 0 }))),
    );

    // Assess
    expect(order).toEqual([0, 1, 2, 3, 4]);
  });

  it('gives up its slot while a throttled call waits to retry', async () => {
    // Prepare
    const clock = new VirtualClock(() => 1);
    const governor = governorOn(clock, { maxConcurrency: 1 }, { baseDelayMs: 1000 });
    const attempts: number[] = [];
    let throttledOnce = false;
    const flaky = async () => {
      attempts.push(clock.now());
      if (!throttledOnce) {
        throttledOnce = true;
        throw throttled();
      }
      return 'retried';
    };
    const other = fakeModel(clock, 10);

    // Act
    const results = await clock.settle(
      Promise.all([
        governor.run(flaky, { reserveTokens: 0 }),
        governor.run(other.call, { reserveTokens: 0 }),
      ]),
    );

    // Assess
    expect(results[0]).toBe('retried');
    expect(other.stats.startedAt).toEqual([0]);
    expect(attempts).toEqual([0, 1000]);
  });
});

describe('RateGovernor retries', () => {
  it('retries a throttled call until it succeeds, with full-jitter delays', async () => {
    // Prepare
    const clock = new VirtualClock(scripted(0.5, 0.25, 0.999));
    const governor = governorOn(clock);
    const flaky = failing([throttled(), throttled(), throttled()]);
    const onRetry = vi.fn();

    // Act
    const result = await clock.settle(governor.run(flaky.call, { reserveTokens: 0, onRetry }));

    // Assess
    expect(result).toBe('ok');
    expect(flaky.calls()).toBe(4);
    expect(onRetry.mock.calls.map(([error, attempt, delayMs]) => [error.name, attempt, delayMs])).toEqual([
      ['ModelThrottledError', 1, 0.5 * 1000],
      ['ModelThrottledError', 2, 0.25 * 2000],
      ['ModelThrottledError', 3, 0.999 * 4000],
    ]);
    expect(clock.now()).toBeCloseTo(500 + 500 + 3996);
  });

  it('caps every backoff ceiling at maxDelayMs', async () => {
    // Prepare
    const clock = new VirtualClock(() => 0.999);
    const governor = governorOn(clock, {}, { baseDelayMs: 1000, maxDelayMs: 3000 });
    const flaky = failing(Array.from({ length: 5 }, throttled));
    const delays: number[] = [];

    // Act
    await clock.settle(
      governor.run(flaky.call, { reserveTokens: 0, onRetry: (_e, _n, ms) => delays.push(ms) }),
    );

    // Assess
    expect(delays.map((ms) => Math.round(ms))).toEqual([999, 1998, 2997, 2997, 2997]);
    for (const ms of delays) expect(ms).toBeLessThanOrEqual(3000);
  });

  it('throws the original ModelThrottledError after exactly `attempts` calls', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, {}, { attempts: 4 });
    const original = throttled();
    let calls = 0;
    const alwaysThrottled = async () => {
      calls++;
      throw original;
    };
    const onRetry = vi.fn();

    // Act
    const error = await clock
      .settle(governor.run(alwaysThrottled, { reserveTokens: 0, onRetry }))
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBe(original);
    expect(calls).toBe(4);
    expect(onRetry).toHaveBeenCalledTimes(3);
    expect(governor.inFlight).toBe(0);
  });

  it('gives a transient failure transientAttempts attempts and throws it unchanged', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, {}, { attempts: 10, transientAttempts: 3 });
    const original = new ModelTransientError('503 Service Unavailable');
    let calls = 0;
    const down = async () => {
      calls++;
      throw original;
    };

    // Act
    const error = await clock.settle(governor.run(down, { reserveTokens: 0 })).catch((e: unknown) => e);

    // Assess
    expect(error).toBe(original);
    expect(calls).toBe(3);
    expect(governor.concurrency).toBe(8);
  });

  it('counts throttles and transient failures against their own attempts', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, {}, { attempts: 3, transientAttempts: 2 });
    const flaky = failing([throttled(), new ModelTransientError('reset'), throttled()]);

    // Act
    const result = await clock.settle(governor.run(flaky.call, { reserveTokens: 0 }));

    // Assess
    expect(result).toBe('ok');
    expect(flaky.calls()).toBe(4);
  });

  it.each([
    ['JudgeAnswerError', new JudgeAnswerError('off-schema', usage)],
    ['ModelRefusedError', new ModelRefusedError('blocked', usage)],
    ['ModelRequestError', new ModelRequestError('too long')],
    ['ModelConfigError', new ModelConfigError('no access')],
    ['a bug', new TypeError('x is undefined')],
  ])('throws %s at once, without retry or a cut', async (_name, original) => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock);
    const onRetry = vi.fn();
    const broken = failing([original]);

    // Act
    const error = await clock
      .settle(governor.run(broken.call, { reserveTokens: 0, onRetry }))
      .catch((e: unknown) => e);

    // Assess
    expect(error).toBe(original);
    expect(broken.calls()).toBe(1);
    expect(onRetry).not.toHaveBeenCalled();
    expect(governor.concurrency).toBe(8);
    expect(governor.inFlight).toBe(0);
  });
});

describe('RateGovernor budgets', () => {
  it('spreads 120 calls over about 60 s at 60 requests per minute', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { maxConcurrency: 10, requestsPerMinute: 60 });
    const model = fakeModel(clock, 10);

    // Act
    await clock.settle(
      Promise.all(Array.from({ length: 120 }, () => governor.run(model.call, { reserveTokens: 0 }))),
    );

    // Assess
    expect(model.stats.calls).toBe(120);
    expect(clock.now()).toBeGreaterThan(58_000);
    expect(clock.now()).toBeLessThan(62_000);
  });

  it('spends its unused minute at the first throttle: the retry waits for the budget to refill', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { maxConcurrency: 1, requestsPerMinute: 60 }, { baseDelayMs: 0 });
    const { call, calls } = failing([throttled()]);

    // Act
    await clock.settle(governor.run(call, { reserveTokens: 0 }));

    // Assess
    // Without draining, the full bucket would send the retry at once, into the same spent quota.
    expect(calls()).toBe(2);
    expect(clock.now()).toBeGreaterThanOrEqual(1000);
  });

  it('delays a call until the token budget has refilled enough for its reservation', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { tokensPerMinute: 6000 });
    const model = fakeModel(clock, 10);

    // Act
    await clock.settle(
      Promise.all([
        governor.run(model.call, { reserveTokens: 6000 }),
        governor.run(model.call, { reserveTokens: 3000 }),
      ]),
    );

    // Assess
    const [first, second] = model.stats.startedAt;
    expect(first).toBe(0);
    expect(second).toBeGreaterThanOrEqual(30_000);
    expect(second).toBeLessThanOrEqual(30_001);
  });

  it('refunds unused reserved tokens so more calls get through sooner', async () => {
    // Prepare
    const runTwenty = async (refund: boolean) => {
      const clock = new VirtualClock();
      const governor = governorOn(clock, { maxConcurrency: 1, tokensPerMinute: 6000 });
      const model = fakeModel(clock, 10);
      const options = { reserveTokens: 1000, tokensUsed: refund ? () => 100 : undefined };
      await clock.settle(Promise.all(Array.from({ length: 20 }, () => governor.run(model.call, options))));
      return clock.now();
    };

    // Act
    const withRefund = await runTwenty(true);
    const withoutRefund = await runTwenty(false);

    // Assess
    expect(withRefund).toBe(20 * 10);
    expect(withoutRefund).toBeGreaterThan(130_000);
  });

  it('debits the tokens a call used beyond its reservation', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { tokensPerMinute: 6000 });
    const model = fakeModel(clock, 10);
    await clock.settle(governor.run(model.call, { reserveTokens: 1000, tokensUsed: () => 4000 }));

    // Act
    await clock.settle(governor.run(model.call, { reserveTokens: 5000 }));

    // Assess
    const second = model.stats.startedAt[1] ?? 0;
    expect(second).toBeGreaterThanOrEqual(29_990);
    expect(second).toBeLessThanOrEqual(30_010);
  });

  it('lets an oversized reservation through once the bucket is full, without deadlock', async () => {
    // Prepare
    const clock = new VirtualClock();
    const governor = governorOn(clock, { tokensPerMinute: 1000 });
    const model = fakeModel(clock, 10);

    // Act
    await clock.settle(
      Promise.all([
        governor.run(model.call, { reserveTokens: 5000 }),
        governor.run(model.call, { reserveTokens: 5000 }),
      ]),
    );

    // Assess
    const [first, second] = model.stats.startedAt;
    expect(first).toBe(0);
    expect(second).toBeGreaterThanOrEqual(300_000);
    expect(second).toBeLessThanOrEqual(300_001);
  });
});

describe('RateGovernor lifecycle', () => {
  it('leaves no timer behind once idle on the system clock', async () => {
    // Prepare
    vi.useFakeTimers();
    try {
      const governor = new RateGovernor(
        { maxConcurrency: 2, requestsPerMinute: 1 },
        { ...retry, baseDelayMs: 10 },
      );
      const flaky = failing([throttled()]);

      // Act
      const done = governor.run(flaky.call, { reserveTokens: 0 });
      await vi.runAllTimersAsync();

      // Assess
      await expect(done).resolves.toBe('ok');
      expect(flaky.calls()).toBe(2);
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('rejects out-of-range limits and retry policies with one ConfigError naming each', () => {
    // Prepare
    const limits = { maxConcurrency: 0, minConcurrency: 2, requestsPerMinute: -1 };
    const policy = { ...retry, attempts: 0 };

    // Act
    const make = () => new RateGovernor(limits, policy);

    // Assess
    expect(make).toThrow(ConfigError);
    expect(make).toThrow(/maxConcurrency.*minConcurrency.*requestsPerMinute.*retry\.attempts/);
  });
});
