import { ConfigError, ModelThrottledError, ModelTransientError } from '../errors.js';

/** What one process may send to one model. */
export interface GovernorLimits {
  /** Requests per minute this process may send; undefined = no request budget. */
  readonly requestsPerMinute?: number;
  /** Tokens (input + output) per minute this process may use; undefined = no token budget. */
  readonly tokensPerMinute?: number;
  /** The most calls in flight at once; AIMD never goes above it. */
  readonly maxConcurrency: number;
  /** The fewest calls in flight AIMD may cut to; default 1. */
  readonly minConcurrency?: number;
}

/**
 * How a governed call is retried: full-jitter exponential backoff, the delay before retry `n` being
 * `random() * min(maxDelayMs, baseDelayMs * 2 ** (n - 1))`.
 *
 * With 10 attempts, a 1 s base and a 60 s cap, the nine retries wait at most
 * 1 + 2 + 4 + 8 + 16 + 32 + 60 + 60 + 60 = 243 s, about 121 s on average under full jitter: two
 * per-minute quota windows, so a call throttled by an exhausted quota outlasts the window it hit.
 */
export interface RetryPolicy {
  /** Attempts for a throttled call, first included (e.g. 10). */
  readonly attempts: number;
  /** Attempts for a transient failure (5xx, timeout, reset), first included (e.g. 4). */
  readonly transientAttempts: number;
  /** The backoff ceiling of the first retry, doubling per retry; also the AIMD cut cooldown (e.g. 1000). */
  readonly baseDelayMs: number;
  /** The most any backoff ceiling grows to (e.g. 60 000). */
  readonly maxDelayMs: number;
}

/** Time and chance as the governor sees them; tests pass a virtual one. */
export interface Clock {
  /** Milliseconds since some fixed origin. */
  now(): number;
  /** Resolves after `ms` milliseconds. */
  sleep(ms: number): Promise<void>;
  /** A number in [0, 1), as `Math.random`. */
  random(): number;
}

/** How one call is budgeted and watched. */
export interface GovernedCall<T> {
  /** Tokens to reserve against the token budget up front: estimated input tokens + maxTokens. */
  readonly reserveTokens: number;
  /** Tokens the call really used (input + output), to refund or debit the reservation. */
  readonly tokensUsed?: (result: T) => number;
  /** Told of each retry: why, which attempt just failed (1-based), and how long it waits. */
  readonly onRetry?: (error: Error, attempt: number, delayMs: number) => void;
}

/** The wall clock: `Date.now`, a `setTimeout` sleep and `Math.random`. */
export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  random: () => Math.random(),
};

const MS_PER_MINUTE = 60_000;
// Refill arithmetic is exact for whole budgets, but fractional shares (a quota split across
// processes) can leave a rounding hair below the amount a wait was computed for.
const EPSILON = 1e-6;

/** A continuously refilled bucket holding up to one minute's budget. */
class Bucket {
  private level: number;
  private updatedAt: number;

  constructor(
    private readonly perMinute: number,
    now: number,
  ) {
    this.level = perMinute;
    this.updatedAt = now;
  }

  /**
   * Milliseconds until the bucket holds `amount`, 0 if it does now. A demand above the capacity waits
   * only for a full bucket, so an oversized reservation cannot wait forever.
   */
  waitFor(amount: number, now: number): number {
    this.refill(now);
    const deficit = Math.min(amount, this.perMinute) - this.level;
    if (deficit <= EPSILON) return 0;
    return Math.max(1, Math.ceil((deficit * MS_PER_MINUTE) / this.perMinute));
  }

  /** Empties the bucket: the service said its budget is spent, whatever this one holds. */
  drain(now: number): void {
    this.refill(now);
    this.level = Math.min(this.level, 0);
  }

  /** Takes `amount` (negative refunds), leaving the level below zero when more is taken than held. */
  take(amount: number): void {
    this.level = Math.min(this.perMinute, this.level - amount);
  }

  private refill(now: number): void {
    const elapsed = Math.max(0, now - this.updatedAt);
    this.level = Math.min(this.perMinute, this.level + (elapsed * this.perMinute) / MS_PER_MINUTE);
    this.updatedAt = now;
  }
}

/**
 * Paces one model's calls from one process: a request and a token budget, an adaptive concurrency
 * limit, and retries of throttled and transient failures.
 *
 * Concurrency is AIMD: it starts at `maxConcurrency`, halves on a throttle (at most once per
 * `baseDelayMs`, so one overload answered by a burst of 429s halves it once), and grows by
 * `1 / limit` per success, about +1 per `limit` successes. Waiting calls are served in arrival order.
 *
 * Budgets are token buckets holding a minute's budget, full at the start. Each attempt takes one
 * request and `reserveTokens` before it is sent; a success refunds what it did not use (or pays what
 * it overran), a failure keeps its reservation, as the service probably counted it.
 *
 * A `ModelThrottledError` is retried until the call has been throttled `attempts` times, a
 * `ModelTransientError` until it has failed transiently `transientAttempts` times; then the last
 * error is thrown unchanged for the Step Functions Retry. Any other error is thrown at once. A call
 * waiting to retry gives up its slot.
 *
 * It holds no timers while idle and no global state; make one per model per process.
 */
export class RateGovernor {
  private limit: number;
  private readonly minConcurrency: number;
  private readonly maxConcurrency: number;
  private active = 0;
  private lastCutAt = Number.NEGATIVE_INFINITY;
  private readonly slotWaiters: (() => void)[] = [];
  private readonly requests: Bucket | undefined;
  private readonly tokens: Bucket | undefined;
  // Budget waits run one at a time, in arrival order, so a large reservation is not starved by a
  // stream of small ones taking each refill first.
  private budgetTurn: Promise<void> = Promise.resolve();

  /** Throws ConfigError when the limits or the retry policy are out of range. */
  constructor(
    limits: GovernorLimits,
    private readonly retry: RetryPolicy,
    private readonly clock: Clock = systemClock,
  ) {
    const problems = problemsOf(limits, retry);
    if (problems.length > 0) throw new ConfigError(`rate governor: ${problems.join('; ')}`);
    this.maxConcurrency = limits.maxConcurrency;
    this.minConcurrency = limits.minConcurrency ?? 1;
    this.limit = this.maxConcurrency;
    const now = clock.now();
    this.requests =
      limits.requestsPerMinute === undefined ? undefined : new Bucket(limits.requestsPerMinute, now);
    this.tokens = limits.tokensPerMinute === undefined ? undefined : new Bucket(limits.tokensPerMinute, now);
  }

  /**
   * The current concurrency limit. It may be fractional; the effective limit is its floor, at least
   * `minConcurrency`.
   */
  get concurrency(): number {
    return this.limit;
  }

  /** Calls holding a slot: sending, or waiting for budget to send. */
  get inFlight(): number {
    return this.active;
  }

  /**
   * Runs `call` within the limits, retrying throttled and transient failures with full-jitter backoff.
   * Resolves with its result, or rejects with the last error once retries run out.
   */
  async run<T>(call: () => Promise<T>, options: GovernedCall<T>): Promise<T> {
    const { reserveTokens, tokensUsed, onRetry } = options;
    if (!(reserveTokens >= 0) || !Number.isFinite(reserveTokens))
      throw new RangeError(`reserveTokens must be a finite number >= 0, got ${reserveTokens}`);
    let throttles = 0;
    let transients = 0;
    for (let attempt = 1; ; attempt++) {
      await this.acquireSlot();
      let result: T;
      try {
        await this.takeBudget(reserveTokens);
        result = await call();
      } catch (error) {
        // Cut before releasing, or the freed slot goes to a waiter under the old limit.
        if (error instanceof ModelThrottledError) {
          this.cut();
          // A bucket that starts full holds a minute the service never granted: spend it now, not as
          // a throttled request every few seconds for the rest of the run.
          this.requests?.drain(this.clock.now());
        }
        this.releaseSlot();
        if (error instanceof ModelThrottledError) {
          if (++throttles >= this.retry.attempts) throw error;
        } else if (error instanceof ModelTransientError) {
          if (++transients >= this.retry.transientAttempts) throw error;
        } else {
          throw error;
        }
        const delayMs = this.backoff(attempt);
        onRetry?.(error, attempt, delayMs);
        await this.clock.sleep(delayMs);
        continue;
      }
      this.grow();
      this.releaseSlot();
      if (this.tokens && tokensUsed) {
        const used = tokensUsed(result);
        if (Number.isFinite(used)) this.tokens.take(used - reserveTokens);
      }
      return result;
    }
  }

  private get effectiveLimit(): number {
    return Math.max(this.minConcurrency, Math.floor(this.limit));
  }

  private acquireSlot(): Promise<void> {
    if (this.slotWaiters.length === 0 && this.active < this.effectiveLimit) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.slotWaiters.push(resolve));
  }

  private releaseSlot(): void {
    this.active--;
    this.admitWaiters();
  }

  private admitWaiters(): void {
    while (this.active < this.effectiveLimit) {
      const next = this.slotWaiters.shift();
      if (!next) return;
      this.active++;
      next();
    }
  }

  private cut(): void {
    const now = this.clock.now();
    if (now - this.lastCutAt < this.retry.baseDelayMs) return;
    this.lastCutAt = now;
    this.limit = Math.max(this.minConcurrency, Math.floor(this.limit / 2));
  }

  private grow(): void {
    this.limit = Math.min(this.maxConcurrency, this.limit + 1 / this.limit);
  }

  private backoff(attempt: number): number {
    const ceiling = Math.min(this.retry.maxDelayMs, this.retry.baseDelayMs * 2 ** (attempt - 1));
    return this.clock.random() * ceiling;
  }

  private takeBudget(reserveTokens: number): Promise<void> {
    if (!this.requests && !this.tokens) return Promise.resolve();
    const turn = this.budgetTurn.then(() => this.waitForBudget(reserveTokens));
    this.budgetTurn = turn.catch(() => undefined);
    return turn;
  }

  private async waitForBudget(reserveTokens: number): Promise<void> {
    for (;;) {
      const now = this.clock.now();
      const waitMs = Math.max(
        this.requests?.waitFor(1, now) ?? 0,
        this.tokens?.waitFor(reserveTokens, now) ?? 0,
      );
      if (waitMs === 0) break;
      await this.clock.sleep(waitMs);
    }
    this.requests?.take(1);
    this.tokens?.take(reserveTokens);
  }
}

function problemsOf(limits: GovernorLimits, retry: RetryPolicy): string[] {
  const problems: string[] = [];
  const { maxConcurrency, minConcurrency = 1, requestsPerMinute, tokensPerMinute } = limits;
  if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1)
    problems.push(`maxConcurrency must be a whole number >= 1, got ${maxConcurrency}`);
  if (!Number.isInteger(minConcurrency) || minConcurrency < 1 || minConcurrency > maxConcurrency)
    problems.push(`minConcurrency must be a whole number from 1 to maxConcurrency, got ${minConcurrency}`);
  for (const [name, value] of [
    ['requestsPerMinute', requestsPerMinute],
    ['tokensPerMinute', tokensPerMinute],
  ] as const) {
    if (value !== undefined && !(value > 0 && Number.isFinite(value)))
      problems.push(`${name} must be a positive number, got ${value}`);
  }
  for (const name of ['attempts', 'transientAttempts'] as const) {
    if (!Number.isInteger(retry[name]) || retry[name] < 1)
      problems.push(`retry.${name} must be a whole number >= 1, got ${retry[name]}`);
  }
  for (const name of ['baseDelayMs', 'maxDelayMs'] as const) {
    if (!(retry[name] >= 0 && Number.isFinite(retry[name])))
      problems.push(`retry.${name} must be a number >= 0, got ${retry[name]}`);
  }
  return problems;
}
