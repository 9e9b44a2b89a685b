import { describe, expect, it } from 'vitest';
import { DEFAULT_LOCAL_MODEL, parseConfig } from '../../lib/pipeline/config.js';
import { batchPriceOf } from '../../lib/pipeline/ledger.js';

const HAIKU = 'anthropic.claude-3-haiku-20240307-v1:0';

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

  it('takes priceFactor times the built-in on-demand price, for a model id or its inference profile', () => {
    // Prepare
    const config = parseConfig({});

    // Act
    const prices = [batchPriceOf(HAIKU, config), batchPriceOf(`us.${HAIKU}`, config)];

    // Assess
    // Haiku lists at $0.00025 in and $0.00125 out per 1,000 tokens; batch is half of that by default.
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
});
