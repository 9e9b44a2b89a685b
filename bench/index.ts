import type { Bench, BenchRow } from './bench.js';
import { inputMemory } from './input-memory.js';

/** Every bench `npm run bench` runs, in order; add new ones here. */
const benches: readonly Bench[] = [inputMemory];

/** Lays rows out as a plain text table, one column per figure any row has. */
function table(rows: readonly BenchRow[]): string {
  const figureNames = [...new Set(rows.flatMap((r) => Object.keys(r.figures)))];
  const header = ['bench', 'case', ...figureNames, 'target', 'met'];
  const cells = rows.map((r) => [
    r.bench,
    r.case,
    ...figureNames.map((name) => String(r.figures[name] ?? '')),
    r.target,
    r.met ? 'yes' : 'NO',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)));
  const line = (values: string[]) => values.map((v, i) => v.padEnd(widths[i] as number)).join('  ');
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

const rows: BenchRow[] = [];
for (const bench of benches) {
  process.stderr.write(`running ${bench.name}...\n`);
  rows.push(...(await bench.run()));
}
process.stdout.write(`${table(rows)}\n`);
const missed = rows.filter((r) => !r.met);
if (missed.length > 0) {
  process.stdout.write(`${missed.length} target(s) missed\n`);
  process.exitCode = 1;
}
