import { z } from 'zod';
import { shortHash } from '../records.js';
import { MODEL_STAGES, Pair, type Reject, STAGES, StageStats } from '../schemas.js';

/** The HTML report's file name, next to report.json. */
export const REPORT_HTML_FILE = 'report.html';
/** How many pairs the report shows. */
export const SAMPLE_SIZE = 5;
/** The longest prompt, chosen or rejected text a sample shows, in UTF-16 code units. */
export const SAMPLE_MAX_CHARS = 2000;

/** The rubric scores a judge gives. */
export const SCORES = [1, 2, 3, 4, 5] as const;
/** The judges whose scores the report draws. */
export const JUDGES = ['filter', 'evaluate'] as const;
export type Judge = (typeof JUDGES)[number];

/** How many records got each score, 1 to 5: the count for score `s` is at index `s - 1`. */
export const ScoreCounts = z.array(z.number().int().nonnegative()).length(SCORES.length);
export type ScoreCounts = z.infer<typeof ScoreCounts>;

/** One judge's scores: of the pairs kept, and of the rejects whose detail carries the score. */
export const ScoreHistogram = z.object({ kept: ScoreCounts, rejected: ScoreCounts });
export type ScoreHistogram = z.infer<typeof ScoreHistogram>;

/** One stage's figures as report.json gives them; model stages add what their batch jobs cost. */
export const StageFigures = StageStats.pick({
  in: true,
  out: true,
  rejected: true,
  calls: true,
  costUsd: true,
}).extend({ batchCostUsd: z.number().nonnegative().optional() });
export type StageFigures = z.infer<typeof StageFigures>;

const ModeFigures = z.object({
  calls: z.number().int().nonnegative(),
  inputTokens: z.number().int().nonnegative(),
  outputTokens: z.number().int().nonnegative(),
  costUsd: z.number().nonnegative(),
});

/**
 * What the HTML report draws: the fields of report.json it shows, plus what merge gathers while it
 * streams the outputs: the judges' score histograms and a few sample pairs.
 */
export const ReportHtmlInput = z.object({
  runId: z.string(),
  mode: z.string(),
  startedAt: z.string(),
  finishedAt: z.string(),
  input: z.object({ key: z.string(), etag: z.string().nullable(), records: z.number().int().nonnegative() }),
  pairs: z.number().int().nonnegative(),
  rejects: z.number().int().nonnegative(),
  /** By stage name; a stage missing here is drawn as zero. */
  stages: z.record(z.string(), StageFigures),
  totals: ModeFigures.extend({
    cacheHits: z.number().int().nonnegative(),
    cacheMisses: z.number().int().nonnegative(),
    throttled: z.number().int().nonnegative(),
    retries: z.number().int().nonnegative(),
  }),
  modes: z.object({ 'on-demand': ModeFigures, batch: ModeFigures.extend({ jobs: z.number().int() }) }),
  /** Reject counts by stage, then by reason. */
  rejectsByStage: z.record(z.string(), z.record(z.string(), z.number().int().nonnegative())),
  failedShards: z.array(z.object({ shard: z.string(), stage: z.string(), error: z.string() })),
  models: z.record(z.string(), z.string()),
  thresholds: z.object({ filter: z.number().int(), evaluate: z.number().int() }),
  /** Prompt-template hash by model stage. */
  templates: z.record(z.string(), z.string()),
  scores: z.object({ filter: ScoreHistogram, evaluate: ScoreHistogram }),
  samples: z.array(Pair),
});
export type ReportHtmlInput = z.infer<typeof ReportHtmlInput>;

const emptyHistogram = (): ScoreHistogram => ({ kept: SCORES.map(() => 0), rejected: SCORES.map(() => 0) });

/** The reasons whose reject detail starts with the judge's score, as `score 2 < 3: rationale`. */
const SCORED_REASONS: Record<string, string> = { filter: 'low-quality-instruction', evaluate: 'low-score' };
const REJECT_SCORE = /^score ([1-5]) < /;

/** The judge score a reject carries in its detail, if it is a below-threshold reject of a judge. */
export function rejectScore(reject: Reject): { judge: Judge; score: number } | undefined {
  const judge = JUDGES.find((j) => j === reject.stage);
  if (judge === undefined || SCORED_REASONS[judge] !== reject.reason) return undefined;
  const match = REJECT_SCORE.exec(reject.detail);
  return match ? { judge, score: Number(match[1]) } : undefined;
}

/**
 * Gathers the report's score histograms and sample pairs while merge streams the outputs, holding
 * only the counts and at most {@link SAMPLE_SIZE} pairs. The samples are the pairs whose id hashes
 * lowest: the same pairs whatever order the shards are read in.
 */
export class ReportTally {
  private readonly histograms = { filter: emptyHistogram(), evaluate: emptyHistogram() };
  private readonly sampled: { rank: string; pair: Pair }[] = [];

  constructor(private readonly sampleSize = SAMPLE_SIZE) {}

  /** Counts a kept pair's judge scores and considers it for the samples. */
  addPair(pair: Pair): void {
    for (const judge of JUDGES) {
      const score = pair.metadata.stages[judge]?.score;
      if (score !== undefined) this.bump(this.histograms[judge].kept, score);
    }
    const rank = shortHash(pair.id);
    if (this.sampled.length === this.sampleSize && rank >= (this.sampled.at(-1)?.rank ?? '')) return;
    const at = this.sampled.findIndex((s) => rank < s.rank);
    this.sampled.splice(at === -1 ? this.sampled.length : at, 0, { rank, pair });
    if (this.sampled.length > this.sampleSize) this.sampled.pop();
  }

  /** Counts a reject's judge score, when it carries one. */
  addReject(reject: Reject): void {
    const scored = rejectScore(reject);
    if (scored) this.bump(this.histograms[scored.judge].rejected, scored.score);
  }

  /** The histograms and samples gathered so far. */
  figures(): Pick<ReportHtmlInput, 'scores' | 'samples'> {
    return {
      scores: {
        filter: structuredClone(this.histograms.filter),
        evaluate: structuredClone(this.histograms.evaluate),
      },
      samples: this.sampled.map((s) => s.pair),
    };
  }

  private bump(counts: number[], score: number): void {
    if (Number.isInteger(score) && score >= 1 && score <= SCORES.length)
      counts[score - 1] = (counts[score - 1] ?? 0) + 1;
  }
}

const ENTITIES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Escapes text for an HTML element or a quoted attribute value. */
export const escapeHtml = (text: string): string => text.replace(/[&<>"']/g, (c) => ENTITIES[c] ?? c);

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const count = (n: number) => integer.format(n);
const usd = (n: number) => `$${n.toFixed(n !== 0 && n < 0.01 ? 6 : 4)}`;

/** Cuts a text to `max` code units without splitting a surrogate pair, and says how much was left off. */
function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  const end = /[\uD800-\uDBFF]/.test(text.charAt(max - 1)) ? max - 1 : max;
  return `${text.slice(0, end)}\n… (${count(text.length - end)} more characters)`;
}

/** One bar of a chart: what it is called, its value, how the value reads, and its data attributes. */
interface Bar {
  readonly label: string;
  readonly value: number;
  readonly shown: string;
  readonly data: Record<string, string>;
}

const dataAttributes = (data: Record<string, string>) =>
  Object.entries(data)
    .map(([name, value]) => ` data-${name}="${escapeHtml(value)}"`)
    .join('');

/** The most characters of a bar's label the chart shows; its tooltip and table show all. */
const LABEL_MAX = 46;

/** A labelled horizontal bar chart: one `rect.bar` per bar, the longest bar filling the plot. */
function horizontalBars(id: string, caption: string, bars: readonly Bar[]): string {
  const width = 760;
  // Wide enough for the longest label at about 7px a character, which is cut short past LABEL_MAX.
  const labelWidth = Math.min(340, Math.max(120, 16 + 7 * Math.max(0, ...bars.map((b) => b.label.length))));
  const valueWidth = 110;
  const row = 26;
  const plot = width - labelWidth - valueWidth;
  const height = Math.max(1, bars.length) * row + 8;
  const max = Math.max(0, ...bars.map((b) => b.value));
  const rows = bars.map((bar, i) => {
    const y = 4 + i * row;
    const length = max > 0 ? (plot * Math.max(0, bar.value)) / max : 0;
    const label = escapeHtml(bar.label);
    const short = escapeHtml(
      bar.label.length > LABEL_MAX ? `${bar.label.slice(0, LABEL_MAX - 1)}…` : bar.label,
    );
    const shown = escapeHtml(bar.shown);
    return (
      `<g><title>${label}: ${shown}</title>` +
      `<text class="label" x="${labelWidth - 8}" y="${y + row / 2}" text-anchor="end" dominant-baseline="middle">${short}</text>` +
      `<rect class="bar"${dataAttributes({ ...bar.data, value: String(bar.value) })} x="${labelWidth}" y="${y + 3}" width="${length.toFixed(2)}" height="${row - 6}"/>` +
      `<text class="value" x="${(labelWidth + length + 6).toFixed(2)}" y="${y + row / 2}" dominant-baseline="middle">${shown}</text></g>`
    );
  });
  return (
    `<svg id="${id}" class="chart" role="img" aria-label="${escapeHtml(caption)}" viewBox="0 0 ${width} ${height}" ` +
    `width="${width}" height="${height}">${rows.join('')}</svg>`
  );
}

/** A judge's score histogram: for each score 1-5, a bar of kept pairs and one of scored rejects. */
function scoreHistogram(judge: Judge, histogram: ScoreHistogram, threshold: number): string {
  const width = 460;
  const height = 240;
  const left = 40;
  const bottom = 200;
  const top = 24;
  const group = (width - left - 10) / SCORES.length;
  const barWidth = group * 0.36;
  const max = Math.max(0, ...histogram.kept, ...histogram.rejected);
  const series = [
    { name: 'kept', counts: histogram.kept },
    { name: 'rejected', counts: histogram.rejected },
  ] as const;
  const parts: string[] = [
    `<line class="axis" x1="${left}" y1="${bottom}" x2="${width - 10}" y2="${bottom}"/>`,
  ];
  for (const [i, score] of SCORES.entries()) {
    const x0 = left + i * group;
    parts.push(
      `<text class="label" x="${(x0 + group / 2).toFixed(2)}" y="${bottom + 18}" text-anchor="middle">${score}</text>`,
    );
    for (const [s, { name, counts }] of series.entries()) {
      const value = counts[i] ?? 0;
      const h = max > 0 ? ((bottom - top) * value) / max : 0;
      const x = x0 + group * 0.12 + s * barWidth;
      parts.push(
        `<g><title>score ${score}, ${name}: ${count(value)}</title>` +
          `<rect class="bar ${name}"${dataAttributes({ score: String(score), series: name, value: String(value) })} ` +
          `x="${x.toFixed(2)}" y="${(bottom - h).toFixed(2)}" width="${barWidth.toFixed(2)}" height="${h.toFixed(2)}"/>` +
          (value > 0
            ? `<text class="value" x="${(x + barWidth / 2).toFixed(2)}" y="${(bottom - h - 4).toFixed(2)}" text-anchor="middle">${count(value)}</text>`
            : '') +
          '</g>',
      );
    }
  }
  const tx = (left + (threshold - 1) * group).toFixed(2);
  parts.push(
    `<line class="threshold" x1="${tx}" y1="${top - 12}" x2="${tx}" y2="${bottom}"/>`,
    `<text class="label" x="${tx}" y="${top - 14}" dx="4">threshold ${threshold}</text>`,
    `<text class="label" x="${left}" y="${height - 4}">score</text>`,
  );
  return (
    `<svg id="scores-${judge}" class="chart" role="img" aria-label="${judge} scores of kept pairs and of rejects" ` +
    `viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">${parts.join('')}</svg>`
  );
}

/** A table whose columns from `numbersFrom` on hold numbers, aligned right. */
function table(head: readonly string[], rows: readonly (readonly string[])[], numbersFrom = 1): string {
  const cell = (tag: string, text: string, i: number) =>
    `<${tag}${i >= numbersFrom ? ' class="n"' : ''}>${escapeHtml(text)}</${tag}>`;
  return (
    `<table><thead><tr>${head.map((h, i) => cell('th', h, i)).join('')}</tr></thead>` +
    `<tbody>${rows.map((r) => `<tr>${r.map((c, i) => cell('td', c, i)).join('')}</tr>`).join('')}</tbody></table>`
  );
}

const ZERO: StageFigures = { in: 0, out: 0, rejected: 0, calls: 0, costUsd: 0 };

function funnelBars(input: ReportHtmlInput): Bar[] {
  const first = { label: 'input records', value: input.input.records, stage: 'input' };
  const stages = STAGES.map((stage) => ({
    label: stage === 'merge' ? 'merge (pairs)' : stage,
    value: (input.stages[stage] ?? ZERO).out,
    stage,
  }));
  return [first, ...stages].map(({ label, value, stage }) => ({
    label,
    value,
    shown: count(value),
    data: { stage },
  }));
}

function rejectRows(input: ReportHtmlInput): { stage: string; reason: string; count: number }[] {
  const known: readonly string[] = STAGES;
  const order = (stage: string) => (known.includes(stage) ? known.indexOf(stage) : known.length);
  return Object.entries(input.rejectsByStage)
    .sort(([a], [b]) => order(a) - order(b) || a.localeCompare(b))
    .flatMap(([stage, reasons]) =>
      Object.entries(reasons)
        .sort(([a, m], [b, n]) => n - m || a.localeCompare(b))
        .map(([reason, n]) => ({ stage, reason, count: n })),
    );
}

const stageCost = (figures: StageFigures) => figures.costUsd + (figures.batchCostUsd ?? 0);

function sampleBlock(pair: Pair): string {
  const scores = JUDGES.map((j) => `${j} ${pair.metadata.stages[j]?.score ?? '–'}`).join(', ');
  const field = (name: string, text: string) =>
    `<h4>${name}</h4><pre class="text">${escapeHtml(truncate(text, SAMPLE_MAX_CHARS))}</pre>`;
  return (
    `<article class="sample" data-id="${escapeHtml(pair.id)}">` +
    `<h3>${escapeHtml(pair.id)}</h3>` +
    `<p class="meta">category ${escapeHtml(pair.category ?? '(none)')} · ${escapeHtml(scores)} · ` +
    `${escapeHtml(pair.metadata.source)} line ${pair.metadata.line}</p>` +
    field('prompt', pair.prompt) +
    field('chosen', pair.chosen) +
    field('rejected', pair.rejected) +
    '</article>'
  );
}

const STYLE = `
:root { color-scheme: light; --ink: #1d2430; --muted: #5b6472; --line: #d7dbe2; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  max-width: 1000px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 2em; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { margin: 0 0 4px; font-size: 1em; }
h4 { margin: 10px 0 2px; font-size: 0.85em; color: var(--muted); text-transform: uppercase; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; }
th.n, td.n { text-align: right; font-variant-numeric: tabular-nums; }
svg.chart { display: block; max-width: 100%; height: auto; margin: 8px 0; }
svg .label, svg .value { font-size: 12px; fill: var(--ink); }
svg .axis { stroke: var(--muted); }
svg .threshold { stroke: #9b2c2c; stroke-dasharray: 4 3; }
#funnel .bar { fill: #3b6ea5; }
#rejects .bar { fill: #b5523b; }
#cost .bar { fill: #4b8b3b; }
.bar.kept { fill: #3b6ea5; }
.bar.rejected { fill: #d08c2f; }
.swatch.kept { background: #3b6ea5; }
.swatch.rejected { background: #d08c2f; }
.legend .swatch { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: -1px; }
.histograms { display: flex; flex-wrap: wrap; gap: 24px; }
.warning { background: #fff4e5; border: 1px solid #f0c890; padding: 8px 12px; }
article.sample { border: 1px solid var(--line); border-radius: 6px; padding: 12px; margin: 12px 0; }
article.sample .meta { color: var(--muted); margin: 0; }
pre.text { white-space: pre-wrap; overflow-wrap: anywhere; background: #f5f6f8; padding: 8px; margin: 0;
  font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
`;

/**
 * Renders a run's report as one self-contained HTML page: the records surviving each stage, rejects by
 * stage and reason, cost by stage and mode, the judges' score histograms, sample pairs, and the run's
 * settings. Charts are inline SVG, styles inline, and there is no script and no URL: the page loads
 * nothing, and its Content-Security-Policy forbids loading anything. Every text from the data is escaped.
 */
export function renderReportHtml(input: ReportHtmlInput): string {
  const stageOf = (stage: string) => input.stages[stage] ?? ZERO;
  const rejects = rejectRows(input);
  const facts: [string, string][] = [
    ['run', input.runId],
    ['mode', input.mode],
    ['started', input.startedAt],
    ['finished', input.finishedAt],
    ['input', input.input.key],
    ['input etag', input.input.etag ?? '(none)'],
    ['input records', count(input.input.records)],
    ['pairs', count(input.pairs)],
    ['rejects', count(input.rejects)],
    ['total cost', usd(input.totals.costUsd)],
  ];
  const costBars: Bar[] = MODEL_STAGES.map((stage) => {
    const value = stageCost(stageOf(stage));
    return { label: stage, value, shown: usd(value), data: { stage } };
  });
  const sections = [
    `<h1>Safer-Instruct run report</h1>`,
    `<dl class="facts">${facts.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('')}</dl>`,

    `<h2>Records surviving each stage</h2>`,
    horizontalBars('funnel', 'records surviving each stage', funnelBars(input)),
    table(
      ['stage', 'in', 'out', 'rejected'],
      STAGES.map((stage) => {
        const s = stageOf(stage);
        return [stage, count(s.in), count(s.out), count(s.rejected)];
      }),
    ),
    input.failedShards.length === 0
      ? ''
      : `<p class="warning">${count(input.failedShards.length)} shard(s) failed after every retry; their records are rejects <code>shard-failed</code>.</p>` +
        table(
          ['shard', 'stage', 'error'],
          input.failedShards.map((f) => [f.shard, f.stage, f.error]),
          3,
        ),

    `<h2>Rejects by stage and reason</h2>`,
    rejects.length === 0
      ? '<p>No record was rejected.</p>'
      : horizontalBars(
          'rejects',
          'rejects by stage and reason',
          rejects.map((r) => ({
            label: `${r.stage}: ${r.reason}`,
            value: r.count,
            shown: count(r.count),
            data: { stage: r.stage, reason: r.reason },
          })),
        ) +
        table(
          ['stage', 'reason', 'records'],
          rejects.map((r) => [r.stage, r.reason, count(r.count)]),
          2,
        ),

    `<h2>Cost</h2>`,
    horizontalBars('cost', 'cost by model stage, on-demand plus batch', costBars),
    table(
      ['stage', 'calls', 'on-demand', 'batch', 'total'],
      MODEL_STAGES.map((stage) => {
        const s = stageOf(stage);
        return [stage, count(s.calls), usd(s.costUsd), usd(s.batchCostUsd ?? 0), usd(stageCost(s))];
      }),
    ),
    table(
      ['mode', 'calls', 'input tokens', 'output tokens', 'cost'],
      [
        ...(['on-demand', 'batch'] as const).map((mode) => {
          const m = input.modes[mode];
          return [mode, count(m.calls), count(m.inputTokens), count(m.outputTokens), usd(m.costUsd)];
        }),
        [
          'total',
          count(input.totals.calls),
          count(input.totals.inputTokens),
          count(input.totals.outputTokens),
          usd(input.totals.costUsd),
        ],
      ],
    ),
    `<p>Batch jobs: ${count(input.modes.batch.jobs)}. Cache hits ${count(input.totals.cacheHits)}, misses ` +
      `${count(input.totals.cacheMisses)}; throttled ${count(input.totals.throttled)}, retries ${count(input.totals.retries)}.</p>`,

    `<h2>Judge scores</h2>`,
    `<p class="legend">Rubric scores 1-5 of the pairs kept and of the records rejected below a threshold:` +
      `<span class="swatch kept"></span>kept<span class="swatch rejected"></span>rejected</p>`,
    `<div class="histograms">${JUDGES.map(
      (judge) =>
        `<figure><figcaption>${judge}</figcaption>${scoreHistogram(judge, input.scores[judge], input.thresholds[judge])}</figure>`,
    ).join('')}</div>`,

    `<h2>Sample pairs</h2>`,
    `<p class="warning">These texts come from the data set as they are: the rejected side is offensive by design.</p>`,
    input.samples.length === 0 ? '<p>The run kept no pair.</p>' : input.samples.map(sampleBlock).join(''),

    `<h2>Settings</h2>`,
    table(
      ['stage', 'model', 'template hash', 'threshold'],
      MODEL_STAGES.map((stage) => [
        stage,
        input.models[stage] ?? '',
        input.templates[stage] ?? '',
        stage === 'filter' || stage === 'evaluate' ? String(input.thresholds[stage]) : '',
      ]),
      3,
    ),
  ];
  return [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">`,
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>Run ${escapeHtml(input.runId)}: Safer-Instruct report</title>`,
    `<style>${STYLE}</style></head>`,
    `<body>${sections.join('\n')}</body></html>`,
    '',
  ].join('\n');
}
