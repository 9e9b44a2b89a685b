import type { PipelineConfig } from './config.js';
import type { Usage } from './models/model-client.js';
import { listPriceOf } from './prices.js';
import type { StageStats } from './schemas.js';

export { type InfraUsage, infraCostOf, PRICE_TABLE, perPairUsd } from './prices.js';

/** The price of a model, from the config first, then the built-in table; in-process models cost 0. */
export function priceOf(
  modelId: string,
  config: Pick<PipelineConfig, 'prices'>,
): { inputPer1k: number; outputPer1k: number } {
  const price = config.prices[modelId] ?? listPriceOf(modelId);
  return price
    ? { inputPer1k: price.inputPer1k, outputPer1k: price.outputPer1k }
    : { inputPer1k: 0, outputPer1k: 0 };
}

/**
 * The batch price of a model: the config's batch prices; else, for a model the config prices without
 * batch prices, its on-demand price times `batch.priceFactor`; else the table's batch price where Bedrock
 * lists one; else the table's on-demand price times `batch.priceFactor`.
 */
export function batchPriceOf(
  modelId: string,
  config: Pick<PipelineConfig, 'prices' | 'batch'>,
): { inputPer1k: number; outputPer1k: number } {
  const configured = config.prices[modelId];
  // A configured on-demand price overrides the table, and the table's batch price with it.
  const listed = configured ? undefined : listPriceOf(modelId);
  const price = priceOf(modelId, config);
  const factor = config.batch.priceFactor;
  return {
    inputPer1k: configured?.batchInputPer1k ?? listed?.batchInputPer1k ?? price.inputPer1k * factor,
    outputPer1k: configured?.batchOutputPer1k ?? listed?.batchOutputPer1k ?? price.outputPer1k * factor,
  };
}

/** The dollars a call cost. */
export function costOf(usage: Usage, price: { inputPer1k: number; outputPer1k: number }): number {
  return (usage.inputTokens * price.inputPer1k + usage.outputTokens * price.outputPer1k) / 1000;
}

/** An empty stats record. */
export const emptyStats = (): StageStats => ({
  in: 0,
  out: 0,
  rejected: 0,
  calls: 0,
  inputTokens: 0,
  outputTokens: 0,
  costUsd: 0,
  ms: 0,
  cacheHits: 0,
  cacheMisses: 0,
  throttled: 0,
  retries: 0,
});

/** Adds `b` into `a`. */
export function addStats(a: StageStats, b: StageStats): StageStats {
  return {
    in: a.in + b.in,
    out: a.out + b.out,
    rejected: a.rejected + b.rejected,
    calls: a.calls + b.calls,
    inputTokens: a.inputTokens + b.inputTokens,
    outputTokens: a.outputTokens + b.outputTokens,
    costUsd: a.costUsd + b.costUsd,
    ms: a.ms + b.ms,
    cacheHits: a.cacheHits + b.cacheHits,
    cacheMisses: a.cacheMisses + b.cacheMisses,
    throttled: a.throttled + b.throttled,
    retries: a.retries + b.retries,
  };
}
