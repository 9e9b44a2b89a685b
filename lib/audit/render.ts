import { AUDIT_RULES, type AuditReport, type AuditSection } from './audit.js';

/** A rate as a percentage with one decimal; a rate above 0 never shows as 0.0%. */
export function percent(rate: number): string {
  if (rate > 0 && rate < 0.0005) return '<0.1%';
  return `${(rate * 100).toFixed(1)}%`;
}

const plural = (n: number, one: string, many = `${one}s`) =>
  `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;

/** Lays out rows of cells: the first column left-aligned, the rest right-aligned, two spaces apart. */
function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows)
    for (const [i, cell] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, cell.length);
  return rows.map((row) =>
    row
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join('  ')
      .trimEnd(),
  );
}

/** A count and its rate in one cell, as `12 3.4%`. */
const cell = (section: AuditSection, rule: (typeof AUDIT_RULES)[number]) => {
  const { count, rate } = section.rules[rule];
  return `${count.toLocaleString('en-US')} ${percent(rate).padStart(6)}`;
};

/**
 * The audit as text for a terminal: one table of rules with count and rate, overall and per category
 * (each rate over that column's rows), the figures of the chosen responses, the most frequent chosen
 * responses, and examples of each rule that fired. Texts are shown as JSON strings, so stray whitespace
 * and empty sides are visible.
 */
export function renderAudit(report: AuditReport): string {
  const { overall, categories, quality, fields } = report;
  const counts = [
    plural(overall.rows, 'row'),
    plural(overall.pairs, 'pair'),
    plural(categories.length, 'category', 'categories'),
  ];
  const out: string[] = [
    `${report.source} (${report.format}): ${counts.join(', ')}`,
    `fields: prompt=${fields.prompt} chosen=${fields.chosen} rejected=${fields.rejected} ` +
      `category=${fields.category ?? '(none)'}`,
    `near-duplicates at Jaccard >= ${quality.nearDuplicateThreshold} ` +
      `(${quality.shingleSize}-character shingles, ${quality.minhashPermutations} permutations); ` +
      `at most ${quality.maxNearIdenticalChosen} near-identical chosen`,
    '',
  ];
  const names = categories.map((c) => c.name);
  out.push(
    ...table([
      ['rule', 'overall', ...names],
      ...AUDIT_RULES.map((rule) => [
        rule,
        cell(overall, rule),
        ...categories.map((c) => (rule === 'malformed-row' ? '-' : cell(c, rule))),
      ]),
    ]),
    '',
    ...table([
      ['chosen responses', 'overall', ...names],
      [
        'stock-refusal share',
        percent(overall.stockRefusalShare),
        ...categories.map((c) => percent(c.stockRefusalShare)),
      ],
      ['distinct-1', overall.distinct1.toFixed(3), ...categories.map((c) => c.distinct1.toFixed(3))],
      ['distinct-2', overall.distinct2.toFixed(3), ...categories.map((c) => c.distinct2.toFixed(3))],
    ]),
  );
  if (report.topChosen.length > 0) {
    out.push('', 'most frequent chosen responses');
    const width = Math.max(...report.topChosen.map((t) => t.count.toLocaleString('en-US').length));
    for (const { text, count } of report.topChosen)
      out.push(`  ${count.toLocaleString('en-US').padStart(width)}  ${JSON.stringify(text)}`);
  }
  const fired = AUDIT_RULES.filter((rule) => overall.rules[rule].examples.length > 0);
  if (fired.length > 0) {
    out.push('', 'examples');
    for (const rule of fired) {
      out.push(`  ${rule}`);
      for (const e of overall.rules[rule].examples) {
        const text = e.field === 'row' ? '' : ` ${JSON.stringify(e.text)}`;
        out.push(`    line ${e.line} ${e.field}:${text} (${e.detail})`);
      }
    }
  }
  out.push('', `audited in ${(report.elapsedMs / 1000).toFixed(1)} s`);
  return `${out.join('\n')}\n`;
}
