import { describe, expect, it } from 'vitest';
import { DEFAULT_LOCAL_MODEL, parseConfig } from '../../lib/pipeline/config.js';
import { batchPriceOf, costOf, priceOf } from '../../lib/pipeline/ledger.js';
import { infraCostOf, PRICE_TABLE, perPairUsd } from '../../lib/pipeline/prices.js';

const HAIKU = 'anthropic.claude-3-haiku-20240307-v1:0';
const MISTRAL_LARGE = 'mistral.mistral-large-2407-v1:0';

describe('PRICE_TABLE', () => {
  it('is versioned and names where its prices come from', () => {
    expect(PRICE_TABLE.version).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(PRICE_TABLE.source).toContain('us-east-1');
  });

  it('lists batch prices at half the on-demand ones wherever it lists them', () => {
    // Prepare
    const listed = Object.entries(PRICE_TABLE.models).filter(([, p]) => p.batchInputPer1k !== undefined);

    // Assess
    expect(listed.length).toBeGreaterThan(0);
    for (const [, price] of listed) {
      expect(price.batchInputPer1k).toBeCloseTo(price.inputPer1k / 2, 12);
      expect(price.batchOutputPer1k).toBeCloseTo(price.outputPer1k / 2, 12);
    }
  });

  it('keeps the on-demand prices of the table it replaced', () => {
    expect(PRICE_TABLE.models[HAIKU]).toMatchObject({ inputPer1k: 0.00025, outputPer1k: 0.00125 });
    expect(PRICE_TABLE.models['amazon.nova-micro-v1:0']).toMatchObject({
      inputPer1k: 0.000035,
      outputPer1k: 0.00014,
    });
    expect(PRICE_TABLE.models[MISTRAL_LARGE]).toEqual({ inputPer1k: 0.002, outputPer1k: 0.006 });
  });
});

describe('priceOf', () => {
  it('takes the config price first, then the table by model id or inference profile', () => {
    // Prepare
    const config = parseConfig({ prices: { [HAIKU]: { inputPer1k: 1, outputPer1k: 2 } } });

    // Act
    const prices = [
      priceOf(HAIKU, config),
      priceOf(`us.${HAIKU}`, config),
      priceOf('amazon.nova-lite-v1:0', config),
    ];

    // Assess
    expect(prices).toEqual([
      { inputPer1k: 1, outputPer1k: 2 },
      { inputPer1k: 0.00025, outputPer1k: 0.00125 },
      { inputPer1k: 0.00006, outputPer1k: 0.00024 },
    ]);
  });

  it('charges nothing for a model neither the config nor the table prices', () => {
    expect(priceOf('sagemaker:my-endpoint', parseConfig({}))).toEqual({ inputPer1k: 0, outputPer1k: 0 });
  });
});

describe('costOf', () => {
  it('charges input and output tokens at their own price per 1,000', () => {
    expect(
      costOf({ inputTokens: 2000, outputTokens: 500 }, { inputPer1k: 0.003, outputPer1k: 0.015 }),
    ).toBeCloseTo(0.0135, 12);
  });
});

describe('batchPriceOf', () => {
  it('uses the batch price the config gives for a model', () => {
    // Prepare
    const config = parseConfig({
      prices: { 'my-model': { inputPer1k: 1, outputPer1k: 2, batchInputPer1k: 0.4, batchOutputPer1k: 0.9 } },
    });

    // Act
    const price = batchPriceOf('my-model', config);

    // Assess
    expect(price).toEqual({ inputPer1k: 0.4, outputPer1k: 0.9 });
  });

  it('takes priceFactor times the configured on-demand price when the config gives no batch price', () => {
    // Prepare
    const config = parseConfig({
      prices: { 'my-model': { inputPer1k: 1, outputPer1k: 2 } },
      batch: { priceFactor: 0.25 },
    });

    // Act
    const price = batchPriceOf('my-model', config);

    // Assess
    expect(price).toEqual({ inputPer1k: 0.25, outputPer1k: 0.5 });
  });

  it('takes the built-in batch price, for a model id or its inference profile', () => {
    // Prepare
    const config = parseConfig({});

    // Act
    const prices = [batchPriceOf(HAIKU, config), batchPriceOf(`us.${HAIKU}`, config)];

    // Assess
    // Haiku lists at $0.00025 in and $0.00125 out per 1,000 tokens, and at half of that in batch.
    for (const price of prices) {
      expect(price.inputPer1k).toBeCloseTo(0.000125, 12);
      expect(price.outputPer1k).toBeCloseTo(0.000625, 12);
    }
  });

  it('charges nothing for an in-process model', () => {
    // Prepare
    const config = parseConfig({});

    // Act
    const price = batchPriceOf(DEFAULT_LOCAL_MODEL.slice('llama:'.length), config);

    // Assess
    expect(price).toEqual({ inputPer1k: 0, outputPer1k: 0 });
  });

  it('prefers a listed batch price to priceFactor', () => {
    // Prepare
    const config = parseConfig({ batch: { priceFactor: 0.25 } });

    // Act
    const price = batchPriceOf(HAIKU, config);

    // Assess
    expect(price.inputPer1k).toBeCloseTo(0.000125, 12);
    expect(price.outputPer1k).toBeCloseTo(0.000625, 12);
  });

  it('takes priceFactor times the built-in on-demand price of a model Bedrock lists no batch price for', () => {
    // Prepare
    const config = parseConfig({ batch: { priceFactor: 0.25 } });

    // Act
    const price = batchPriceOf(MISTRAL_LARGE, config);

    // Assess
    expect(price.inputPer1k).toBeCloseTo(0.0005, 12);
    expect(price.outputPer1k).toBeCloseTo(0.0015, 12);
  });

  it('takes priceFactor of a configured on-demand price over the table batch price it overrides', () => {
    // Prepare
    const config = parseConfig({ prices: { [HAIKU]: { inputPer1k: 1, outputPer1k: 2 } } });

    // Act
    const price = batchPriceOf(HAIKU, config);

    // Assess
    expect(price).toEqual({ inputPer1k: 0.5, outputPer1k: 1 });
  });
});

describe('infraCostOf', () => {
  it('prices Lambda arm64 GB-seconds and requests and Standard state transitions at list prices', () => {
    // Act
    const lambdaSeconds = infraCostOf({ lambdaGbSeconds: 1_000_000, lambdaRequests: 0, stateTransitions: 0 });
    const requests = infraCostOf({ lambdaGbSeconds: 0, lambdaRequests: 1_000_000, stateTransitions: 0 });
    const transitions = infraCostOf({ lambdaGbSeconds: 0, lambdaRequests: 0, stateTransitions: 1000 });
    const all = infraCostOf({
      lambdaGbSeconds: 1_000_000,
      lambdaRequests: 1_000_000,
      stateTransitions: 1000,
    });

    // Assess
    expect(lambdaSeconds).toBeCloseTo(13.3334, 9);
    expect(requests).toBeCloseTo(0.2, 12);
    expect(transitions).toBeCloseTo(0.025, 12);
    expect(all).toBeCloseTo(13.3334 + 0.2 + 0.025, 9);
  });

  it('costs nothing for nothing used', () => {
    expect(infraCostOf({ lambdaGbSeconds: 0, lambdaRequests: 0, stateTransitions: 0 })).toBe(0);
  });
});

describe('perPairUsd', () => {
  it('shares the total among the pairs', () => {
    expect(perPairUsd(3, 4)).toBe(0.75);
  });

  it('has no per-pair cost without pairs', () => {
    expect(perPairUsd(3, 0)).toBeNull();
  });
});
