import { ModelRefusedError, ModelThrottledError } from '../errors.js';
import { costOf } from '../ledger.js';
import type { CachedCall } from './call-cache.js';
import type { RateGovernor } from './governor.js';
import type { GenerateRequest, ModelClient, Usage } from './model-client.js';

/** Tokens to reserve for a call: about four characters a token in, and the most it may write out. */
export const reserveFor = (request: GenerateRequest): number =>
  Math.ceil((request.system.length + request.prompt.length) / 4) + request.maxTokens;

/**
 * What tells a model's answers apart in the call cache, asked once: the spec, and for a local model
 * the weights its file holds now. Asked on the first call, not before: nothing to ask loads nothing.
 */
export function identityOf(model: ModelClient): () => Promise<string> {
  let identity: Promise<string> | undefined;
  return () => {
    identity ??= model.identity
      ? model.identity().then((id) => `${model.spec}@${id}`)
      : Promise.resolve(model.spec);
    return identity;
  };
}

/**
 * Runs calls through a rate governor (its quota share, retries and backoff) counting retries and
 * throttles into `stats`; without a governor, calls go out as they are.
 */
export function governedBy(
  governor: RateGovernor | undefined,
  stats: { retries: number; throttled: number },
) {
  return <R extends { usage: Usage }>(request: GenerateRequest, invoke: () => Promise<R>): Promise<R> =>
    governor
      ? governor.run(invoke, {
          reserveTokens: reserveFor(request),
          tokensUsed: (result) => result.usage.inputTokens + result.usage.outputTokens,
          onRetry: (error) => {
            stats.retries++;
            if (error instanceof ModelThrottledError) stats.throttled++;
          },
        })
      : invoke();
}

/**
 * Runs `fn` over items with at most `limit` in flight, keeping the input order. After the first
 * failure no new item starts, and the calls already in flight are waited for, so their answers reach
 * the cache before the failure is rethrown: a retry must not pay for them again.
 */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async () => {
    while (next < items.length && !failure) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.error;
  return results;
}

/** Makes a call as the cache keeps it: a refusal (a content filter) is an answer too, with what it cost. */
export async function callEntry(invoke: () => Promise<CachedCall>): Promise<CachedCall> {
  try {
    return await invoke();
  } catch (error) {
    if (!(error instanceof ModelRefusedError)) throw error;
    return { kind: 'refused', message: error.message, usage: error.usage };
  }
}

/** Counts a paid call into `stats`: one call, its tokens, and its dollars at `price`. */
export function meterInto(
  stats: { calls: number; inputTokens: number; outputTokens: number; costUsd: number },
  price: { inputPer1k: number; outputPer1k: number },
): (usage: Usage) => void {
  return (usage) => {
    stats.calls++;
    stats.inputTokens += usage.inputTokens;
    stats.outputTokens += usage.outputTokens;
    stats.costUsd += costOf(usage, price);
  };
}
