import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runLocal } from '../../lib/local/run-local.js';
import { charsOver4, estimateRun } from '../../lib/pipeline/estimate.js';
import { FakeModel, fakeRegistry } from '../support/fake-model.js';
import { fakeConfig } from '../support/pipeline.js';
import { tempDir } from '../support/temp.js';

const fixture = new URL('../fixtures/records-60.jsonl', import.meta.url).pathname;

describe('estimate against a run of the same input', () => {
  it('comes within 15% of the tokens the run reported, in all and for induce input', async () => {
    // Prepare
    const config = fakeConfig({ shardSize: 10, quality: { lengths: { rejected: { max: 2000 } } } });
    const outDir = tempDir();
    await runLocal({
      input: fixture,
      outDir,
      config,
      registry: fakeRegistry(new FakeModel()),
      retryIntervalMs: 0,
    });
    const report = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));

    // Act
    const estimate = await estimateRun(fixture, config, { counter: charsOver4 });

    // Assess
    const ran = report.totals.inputTokens + report.totals.outputTokens;
    const estimated = estimate.totals.inputTokens + estimate.totals.outputTokens;
    expect(estimated / ran).toBeGreaterThan(0.85);
    expect(estimated / ran).toBeLessThan(1.15);
    const induce = estimate.stages.find((s) => s.stage === 'induce');
    const induceRatio = (induce?.inputTokens ?? 0) / report.stages.induce.inputTokens;
    expect(induceRatio).toBeGreaterThan(0.85);
    expect(induceRatio).toBeLessThan(1.15);
    // Split keeps what the run's split kept; dedup, which the estimate does not predict, only lowers the calls.
    expect(estimate.records.kept).toBe(report.stages.split.out);
    expect(induce?.calls).toBeGreaterThanOrEqual(report.stages.induce.calls);
  });
});
