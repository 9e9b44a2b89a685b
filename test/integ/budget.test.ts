import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runLocal } from '../../lib/local/run-local.js';
import { CallCache } from '../../lib/pipeline/models/call-cache.js';
import type { Pair } from '../../lib/pipeline/schemas.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { FakeModel, fakeRegistry } from '../support/fake-model.js';
import { fakeConfig } from '../support/pipeline.js';
import { readJsonlFile, tempDir } from '../support/temp.js';

const fixture = new URL('../fixtures/records-60.jsonl', import.meta.url).pathname;
// Priced, so that every call counts against the budget.
const config = fakeConfig({
  shardSize: 10,
  quality: { lengths: { rejected: { max: 2000 } } },
  prices: { 'bedrock:fake': { inputPer1k: 1, outputPer1k: 2 } },
});

describe('a run with a budget', () => {
  it('stops before a paid call would pass the budget, keeps what it wrote, and a resume with more finishes it', async () => {
    // Prepare
    const full = await runLocal({
      input: fixture,
      outDir: tempDir(),
      config,
      registry: fakeRegistry(new FakeModel()),
      retryIntervalMs: 0,
    });
    const fullReport = JSON.parse(readFileSync(full.reportPath, 'utf8'));
    const outDir = tempDir();
    const model = new FakeModel();
    const cache = new CallCache(new FsStore(tempDir()));
    const options = { outDir, cache, registry: fakeRegistry(model), retryIntervalMs: 0 };
    let runId = '';
    const budget = fullReport.totals.costUsd * 0.4;

    // Act
    const stopped = await runLocal({
      ...options,
      input: fixture,
      config,
      maxBudgetUsd: budget,
      onProgress: (event) => {
        if (event.type === 'split') runId = event.runId;
      },
    }).catch((error: Error) => error);
    const paidBeforeStop = model.calls.length;
    const resumed = await runLocal({
      ...options,
      resume: runId,
      config,
      maxBudgetUsd: fullReport.totals.costUsd * 2,
    });

    // Assess
    expect(stopped).toMatchObject({ name: 'BudgetExceededError' });
    expect(paidBeforeStop).toBeGreaterThan(0);
    expect(paidBeforeStop).toBeLessThan(fullReport.totals.calls);
    // Not one call paid twice: the resumed run made only the calls the stopped one had not.
    expect(model.calls).toHaveLength(fullReport.totals.calls);
    const pairs = readJsonlFile<Pair>(join(outDir, 'pairs.jsonl'));
    const fullPairs = readJsonlFile<Pair>(full.pairsPath);
    expect(pairs.map((p) => [p.id, p.prompt, p.chosen])).toEqual(
      fullPairs.map((p) => [p.id, p.prompt, p.chosen]),
    );
    expect(resumed.pairs).toBe(full.pairs);
  });

  it('never pays past the budget however often a stopped run is resumed with it', async () => {
    // Prepare
    const full = await runLocal({
      input: fixture,
      outDir: tempDir(),
      config,
      registry: fakeRegistry(new FakeModel()),
      retryIntervalMs: 0,
    });
    const budget = JSON.parse(readFileSync(full.reportPath, 'utf8')).totals.costUsd * 0.5;
    const model = new MeteredModel();
    const options = {
      outDir: tempDir(),
      cache: new CallCache(new FsStore(tempDir())),
      registry: fakeRegistry(model),
      retryIntervalMs: 0,
      maxBudgetUsd: budget,
    };
    let runId = '';
    const first = await runLocal({
      ...options,
      input: fixture,
      config,
      onProgress: (event) => {
        if (event.type === 'split') runId = event.runId;
      },
    }).catch((error: Error) => error);
    const paidFirst = model.paidUsd;

    // Act
    const again = await runLocal({ ...options, resume: runId, config }).catch((error: Error) => error);
    const third = await runLocal({ ...options, resume: runId, config }).catch((error: Error) => error);

    // Assess
    expect([first, again, third].map((e) => (e as Error).name)).toEqual(Array(3).fill('BudgetExceededError'));
    expect(paidFirst).toBeGreaterThan(0);
    expect(model.paidUsd).toBeLessThanOrEqual(budget + 1e-9);
  });

  it('refuses to start a call whose worst case alone passes the budget', async () => {
    // Prepare
    const model = new FakeModel();

    // Act
    const stopped = await runLocal({
      input: fixture,
      outDir: tempDir(),
      config,
      registry: fakeRegistry(model),
      retryIntervalMs: 0,
      maxBudgetUsd: 0.0001,
    }).catch((error: Error) => error);

    // Assess
    expect(stopped).toMatchObject({ name: 'BudgetExceededError' });
    expect(model.calls).toHaveLength(0);
  });
});

/** The fake model, adding up what its calls cost at the test's prices. */
class MeteredModel extends FakeModel {
  paidUsd = 0;
  override async generate(request: Parameters<FakeModel['generate']>[0]) {
    const result = await super.generate(request);
    this.paidUsd += (result.usage.inputTokens * 1 + result.usage.outputTokens * 2) / 1000;
    return result;
  }
  override async judge<T>(request: Parameters<FakeModel['judge']>[0] & { schema: unknown }) {
    const result = await super.judge<T>(request as never);
    this.paidUsd += (result.usage.inputTokens * 1 + result.usage.outputTokens * 2) / 1000;
    return result;
  }
}
