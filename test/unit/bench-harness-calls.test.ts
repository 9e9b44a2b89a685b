import { describe, expect, it } from 'vitest';
import type { BenchRow } from '../../bench/bench.js';
import { concurrencyUse } from '../../bench/concurrency-use.js';
import { quotaUse } from '../../bench/quota-use.js';

// Reduced runs prove the harness only: timing varies with the machine, so no figure is held to its target.
function expectWellFormed(rows: BenchRow[], bench: string): void {
  expect(rows).toHaveLength(1);
  const [row] = rows as [BenchRow];
  expect(row.bench).toBe(bench);
  expect(typeof row.met).toBe('boolean');
  expect(row.target).not.toBe('');
  for (const value of Object.values(row.figures)) expect(Number.isFinite(value)).toBe(true);
  expect(row.figures.calls).toBeGreaterThan(0);
  expect(row.figures.answered).toBe(row.figures.calls);
  expect(row.figures.lost).toBe(0);
}

describe('the governed-call benches', () => {
  it('measures quota use against the fake, answering every call', async () => {
    // Act: a short run, with a short backoff so throttled calls come back within the test
    const rows = await quotaUse.run({
      seconds: 3,
      warmupSeconds: 1,
      requestsPerMinute: 1200,
      retry: { attempts: 30, baseDelayMs: 50, maxDelayMs: 500 },
    });

    // Assess
    expectWellFormed(rows, 'quota-use');
    expect(Object.keys(rows[0]?.figures ?? {})).toEqual(
      expect.arrayContaining(['achieved rpm', 'ratio', 'throttled %']),
    );
  });

  it('measures concurrency use against the fake, answering every call', async () => {
    // Act
    const rows = await concurrencyUse.run({
      seconds: 2,
      warmupSeconds: 0.5,
      latencyMs: 100,
      maxConcurrency: 4,
    });

    // Assess
    expectWellFormed(rows, 'concurrency-use');
    expect(Object.keys(rows[0]?.figures ?? {})).toEqual(expect.arrayContaining(['achieved /s', 'ratio']));
  });
});
