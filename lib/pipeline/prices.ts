/** List prices of one model, USD per 1,000 tokens: on-demand, and in batch where Bedrock lists a batch price. */
export interface ModelPrice {
  readonly inputPer1k: number;
  readonly outputPer1k: number;
  /** Absent: Bedrock lists no batch price; `batchPriceOf` takes `batch.priceFactor` of the on-demand one. */
  readonly batchInputPer1k?: number;
  readonly batchOutputPer1k?: number;
}

/** On-demand prices and Bedrock's batch prices, half the on-demand ones for every model that lists them. */
const withBatch = (inputPer1k: number, outputPer1k: number): ModelPrice => ({
  inputPer1k,
  outputPer1k,
  batchInputPer1k: inputPer1k / 2,
  batchOutputPer1k: outputPer1k / 2,
});

/**
 * The built-in prices, versioned: AWS list prices in us-east-1 on the date of `version`. A run's
 * configuration (`prices`) overrides and extends the models; update the table, and its version, when
 * AWS changes a price. Other regions and inference profiles may be priced differently.
 */
export const PRICE_TABLE = {
  version: '2026-11-30',
  source:
    'AWS list prices, us-east-1: aws.amazon.com/bedrock/pricing (on-demand and batch), ' +
    'aws.amazon.com/lambda/pricing (arm64), aws.amazon.com/step-functions/pricing (Standard workflows)',
  models: {
    'anthropic.claude-3-haiku-20240307-v1:0': withBatch(0.00025, 0.00125),
    'anthropic.claude-3-5-haiku-20241022-v1:0': withBatch(0.0008, 0.004),
    'anthropic.claude-3-5-sonnet-20240620-v1:0': withBatch(0.003, 0.015),
    'anthropic.claude-3-5-sonnet-20241022-v2:0': withBatch(0.003, 0.015),
    'amazon.nova-micro-v1:0': withBatch(0.000035, 0.00014),
    'amazon.nova-lite-v1:0': withBatch(0.00006, 0.00024),
    'amazon.nova-pro-v1:0': withBatch(0.0008, 0.0032),
    'meta.llama3-1-8b-instruct-v1:0': withBatch(0.00022, 0.00022),
    'meta.llama3-1-70b-instruct-v1:0': withBatch(0.00072, 0.00072),
    // No batch price listed: batch.priceFactor applies.
    'mistral.mistral-large-2407-v1:0': { inputPer1k: 0.002, outputPer1k: 0.006 },
  } satisfies Record<string, ModelPrice> as Readonly<Record<string, ModelPrice>>,
  lambda: {
    /** USD per GB-second of duration on arm64 (Graviton), the first pricing tier. */
    perGbSecond: 0.0000133334,
    /** USD per request: $0.20 per million. */
    perRequest: 0.2 / 1_000_000,
  },
  stepFunctions: {
    /** USD per state transition of a Standard workflow, retries included: $0.025 per 1,000. */
    perStateTransition: 0.025 / 1000,
  },
} as const;

const INFERENCE_PROFILE_PREFIX = /^(us|eu|apac|global|jp|au|ca|us-gov)\./;

/** The foundation model an inference profile id routes to (`us.anthropic...` -> `anthropic...`); other ids as they are. */
export const foundationModelOf = (modelId: string): string => modelId.replace(INFERENCE_PROFILE_PREFIX, '');

/** A model's built-in prices, by model id or inference profile id; undefined for a model the table lacks. */
export const listPriceOf = (modelId: string): ModelPrice | undefined =>
  PRICE_TABLE.models[modelId] ?? PRICE_TABLE.models[foundationModelOf(modelId)];

/** What the serverless pipeline used besides model tokens. */
export interface InfraUsage {
  /** Lambda duration times memory, in GB-seconds. */
  readonly lambdaGbSeconds: number;
  readonly lambdaRequests: number;
  /** Step Functions state transitions (Standard workflows), retries included. */
  readonly stateTransitions: number;
}

/** The dollars of Lambda (arm64) and Step Functions (Standard) usage at list prices; free tiers are not deducted. */
export function infraCostOf(usage: InfraUsage): number {
  const { lambda, stepFunctions } = PRICE_TABLE;
  return (
    usage.lambdaGbSeconds * lambda.perGbSecond +
    usage.lambdaRequests * lambda.perRequest +
    usage.stateTransitions * stepFunctions.perStateTransition
  );
}

/** Memory of the deployed functions in MB, by stage: CDK sizes them so, and the ledger prices them so. */
export const FUNCTION_MEMORY_MB: Readonly<Record<string, number>> = {
  dedup: 3008,
  merge: 2048,
  batch: 2048,
  'batch-callback': 512,
};
/** The memory of a stage function that FUNCTION_MEMORY_MB does not name. */
export const DEFAULT_FUNCTION_MEMORY_MB = 1024;

/** Dollars per pair; null when there are no pairs to share the cost. */
export const perPairUsd = (totalUsd: number, pairs: number): number | null =>
  pairs > 0 ? totalUsd / pairs : null;
