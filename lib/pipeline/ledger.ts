import type { PipelineConfig } from './config.js';
import type { Usage } from './models/model-client.js';
import type { StageStats } from './schemas.js';

/** On-demand USD per 1,000 tokens for common Bedrock models (us-east-1 list prices). */
export const PRICES: Readonly<Record<string, { inputPer1k: number; outputPer1k: number }>> = {
  'anthropic.claude-3-haiku-20240307-v1:0': { inputPer1k: 0.00025, outputPer1k: 0.00125 },
  'anthropic.claude-3-5-haiku-20241022-v1:0': { inputPer1k: 0.0008, outputPer1k: 0.004 },
  'anthropic.claude-3-5-sonnet-20240620-v1:0': { inputPer1k: 0.003, outputPer1k: 0.015 },
  'anthropic.claude-3-5-sonnet-20241022-v2:0': { inputPer1k: 0.003, outputPer1k: 0.015 },
  'amazon.nova-micro-v1:0': { inputPer1k: 0.000035, outputPer1k: 0.00014 },
  'amazon.nova-lite-v1:0': { inputPer1k: 0.00006, outputPer1k: 0.00024 },
  'amazon.nova-pro-v1:0': { inputPer1k: 0.0008, outputPer1k: 0.0032 },
  'meta.llama3-1-8b-instruct-v1:0': { inputPer1k: 0.00022, outputPer1k: 0.00022 },
  'meta.llama3-1-70b-instruct-v1:0': { inputPer1k: 0.00072, outputPer1k: 0.00072 },
  'mistral.mistral-large-2407-v1:0': { inputPer1k: 0.002, outputPer1k: 0.006 },
};

const INFERENCE_PROFILE_PREFIX = /^(us|eu|apac|global|jp|au|ca|us-gov)\./;

/** The price of a model, from the config first, then the built-in table; in-process models cost 0. */
export function priceOf(modelId: string, config: Pick<PipelineConfig, 'prices'>) {
  return (
    config.prices[modelId] ??
    PRICES[modelId] ??
    PRICES[modelId.replace(INFERENCE_PROFILE_PREFIX, '')] ?? { inputPer1k: 0, outputPer1k: 0 }
  );
}

/**
 * The batch price of a model: the config's batch prices, else its on-demand price times
 * `batch.priceFactor` (Bedrock bills batch inference at about half the on-demand price).
 */
export function batchPriceOf(modelId: string, config: Pick<PipelineConfig, 'prices' | 'batch'>) {
  const price = priceOf(modelId, config);
  const configured = config.prices[modelId];
  return {
    inputPer1k: configured?.batchInputPer1k ?? price.inputPer1k * config.batch.priceFactor,
    outputPer1k: configured?.batchOutputPer1k ?? price.outputPer1k * config.batch.priceFactor,
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
