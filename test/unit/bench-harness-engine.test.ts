import { describe, expect, it } from 'vitest';
import type { BenchRow } from '../../bench/bench.js';
import { cacheAndCostBench } from '../../bench/cache-and-cost.js';
import { orchestrationBench } from '../../bench/orchestration.js';

const numeric = (row: BenchRow | undefined, figure: string) => Number(row?.figures[figure]);

// Structure only: timings vary by machine, so no assertion here depends on one.
describe('the engine benches, run small', () => {
  it('reports throughput and where the time went through the whole local engine', async () => {
    // Act
    const rows = await orchestrationBench({ records: 300 }).run();

    // Assess
    expect(rows).toHaveLength(1);
    const [row] = rows;
    expect(row?.bench).toBe('orchestration');
    expect(numeric(row, 'pairs')).toBeGreaterThan(0);
    for (const figure of ['records/s', 'wall s', 'task ms (sum)', 'idle ms', 'transitions', 'ms/transition'])
      expect(Number.isFinite(numeric(row, figure)), figure).toBe(true);
    expect(String(row?.figures['ms by stage'])).toMatch(/respond \d+/);
    expect(typeof row?.met).toBe('boolean');
  });

  it('makes no model call on a second run with the same cache, and prices batch below on-demand', async () => {
    // Act
    const rows = await cacheAndCostBench({ records: 300 }).run();

    // Assess
    const cache = rows.find((r) => r.bench === 'cache');
    const cost = rows.find((r) => r.bench === 'cost');
    expect(numeric(cache, 'first calls')).toBeGreaterThan(0);
    expect(numeric(cache, 'second calls')).toBe(0);
    expect(numeric(cache, 'second reported calls')).toBe(0);
    expect(cache?.met).toBe(true);
    const onDemand = numeric(cost, 'on-demand $/1k pairs');
    const batch = numeric(cost, 'batch $/1k pairs');
    expect(onDemand).toBeGreaterThan(0);
    expect(batch).toBeGreaterThan(0);
    expect(batch).toBeLessThan(onDemand);
  });
});
