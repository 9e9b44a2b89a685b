import { writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Bench, BenchRow } from './bench.js';
import { cacheAndCost } from './cache-and-cost.js';
import { concurrencyUse } from './concurrency-use.js';
import { inputMemory } from './input-memory.js';
import { orchestration } from './orchestration.js';
import { quotaUse } from './quota-use.js';

/** Every bench `npm run bench` runs, in order; add new ones here. */
const benches: readonly Bench[] = [quotaUse, concurrencyUse, orchestration, inputMemory, cacheAndCost];

/**
 * Lays rows out as a plain text table: bench, case, target, met, then the row's own figures as
 * `name=value` (benches measure different things, so one column per figure would be mostly empty).
 */
function table(rows: readonly BenchRow[]): string {
  const header = ['bench', 'case', 'target', 'met', 'figures'];
  const cells = rows.map((r) => [
    r.bench,
    r.case,
    r.target,
    r.met ? 'yes' : 'NO',
    Object.entries(r.figures)
      .map(([name, value]) => `${name}=${value}`)
      .join(', '),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => (i === values.length - 1 ? v : v.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

// `npm run bench -- <name>...` runs only the benches named.
const only = new Set(process.argv.slice(2));
const rows: BenchRow[] = [];
const started = Date.now();
for (const bench of benches.filter((b) => only.size === 0 || only.has(b.name))) {
  process.stderr.write(`running ${bench.name}...\n`);
  const benchStarted = Date.now();
  rows.push(...(await bench.run()));
  process.stderr.write(`${bench.name}: ${((Date.now() - benchStarted) / 1000).toFixed(1)} s\n`);
}
process.stdout.write(`${table(rows)}\n`);
const results = {
  finishedAt: new Date().toISOString(),
  seconds: (Date.now() - started) / 1000,
  node: process.version,
  cpus: availableParallelism(),
  rows,
};
await writeFile(
  fileURLToPath(new URL('results.json', import.meta.url)),
  `${JSON.stringify(results, null, 2)}\n`,
);
const missed = rows.filter((r) => !r.met);
if (missed.length > 0) {
  process.stdout.write(`${missed.length} target(s) missed\n`);
  process.exitCode = 1;
}
