import { z } from 'zod';

const Count = z.number().int().nonnegative();
const Share = z.number().min(0).max(1);

/** The key under which pairs without a category are counted. */
export const NO_CATEGORY = '(none)';

/** The line that marks a README.md as a card this module wrote, so a rerun may replace it. */
export const CARD_MARK = '<!-- dataset card written by safer-instruct -->';

/** Longest top chosen response the card quotes, in characters. */
export const CARD_QUOTE_CHARS = 120;

/** What a dataset card reports about a run: counts, models, settings, figures and files. No data. */
export const DatasetCardInput = z.object({
  runId: z.string().min(1),
  /** When the run was made, as an ISO 8601 string. */
  created: z.iso.datetime({ offset: true }),
  /** Shown as the card's title and `pretty_name`. */
  title: z.string().min(1).optional(),
  /** A Hugging Face license id. @default 'other' */
  license: z.string().min(1).optional(),
  input: z.object({ key: z.string().min(1), records: Count }),
  pairs: Count,
  rejects: Count,
  /** Records in, out and rejected per stage, in pipeline order. */
  stages: z.record(z.string(), z.object({ in: Count, out: Count, rejected: Count })),
  /** Rejects per stage and reason. */
  rejectsByStage: z.record(z.string(), z.record(z.string(), Count)),
  /** Pairs per category; pairs without one under `NO_CATEGORY`. */
  categories: z.record(z.string(), Count),
  /** The model each stage called. */
  models: z.record(z.string(), z.string()),
  /** The hash of the prompt template each stage used. */
  templates: z.record(z.string(), z.string()),
  /** The data-quality settings of the run. */
  quality: z.record(z.string(), z.unknown()).optional(),
  /** The lowest judge score each judging stage kept, 1 to 5. */
  thresholds: z.record(z.string(), z.number()).optional(),
  figures: z
    .object({
      /** Share of chosen responses that are a stock refusal. */
      stockRefusalShare: Share.optional(),
      /** Distinct word bigrams over all word bigrams of the chosen responses. */
      distinct2: Share.optional(),
      /** The most frequent chosen responses with their counts. */
      topChosen: z.array(z.object({ text: z.string(), count: Count })).optional(),
    })
    .optional(),
  files: z.array(z.object({ file: z.string().min(1), format: z.string(), description: z.string() })),
  /** Limitations of this run; the standing ones are added. */
  limitations: z.array(z.string()).optional(),
});
export type DatasetCardInput = z.infer<typeof DatasetCardInput>;

/** Limitations every dataset this pipeline makes has. */
export const STANDING_LIMITATIONS = [
  'Pairs were judged by models, not by humans: a judge can keep a bad pair or drop a good one.',
  'Category labels come from the input and are not verified.',
  'The rejected side contains offensive and harmful text; the dataset is for research on safety alignment only.',
  'Near-duplicate detection is lexical (MinHash over character shingles), not semantic: paraphrases pass.',
] as const;

const SIZE_CATEGORIES = [
  [1e3, 'n<1K'],
  [1e4, '1K<n<10K'],
  [1e5, '10K<n<100K'],
  [1e6, '100K<n<1M'],
  [1e7, '1M<n<10M'],
  [1e8, '10M<n<100M'],
  [1e9, '100M<n<1B'],
  [1e10, '1B<n<10B'],
  [1e11, '10B<n<100B'],
  [1e12, '100B<n<1T'],
] as const;

/** The Hugging Face `size_categories` bucket of a row count. */
export const sizeCategory = (rows: number): string =>
  SIZE_CATEGORIES.find(([below]) => rows < below)?.[1] ?? 'n>1T';

// Names and paths pass bare only when YAML cannot read them as anything but that string (not a number,
// boolean or null, no indicator or `: `); anything else is quoted, and a JSON string is a YAML string.
const yamlScalar = (value: string): string =>
  /^[A-Za-z0-9][\w./<>-]*$/.test(value) &&
  !/^(?:true|false|yes|no|on|off|y|n|null)$/i.test(value) &&
  Number.isNaN(Number(value))
    ? value
    : JSON.stringify(value);

const configName = (file: string): string =>
  file
    .replace(/\.[^.]+$/, '')
    .replace(/[^\w-]+/g, '-')
    .toLowerCase();

const DATA_FILE = /\.(jsonl|json|parquet|csv)$/;

/** One line of text, so it cannot end a list item or a heading. */
const line = (value: string): string => value.replace(/\r?\n|\r/g, ' ');

/** Table cell text: one line, pipes escaped so they cannot end the cell, no raw HTML. */
const cell = (value: unknown): string =>
  line(String(value)).replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/</g, '&lt;');

const code = (value: string): string => `\`${line(value).replace(/`/g, "'")}\``;

const table = (head: readonly string[], rows: readonly (readonly unknown[])[]): string =>
  [
    `| ${head.map(cell).join(' | ')} |`,
    `|${head.map(() => ' --- ').join('|')}|`,
    ...rows.map((row) => `| ${row.map(cell).join(' | ')} |`),
  ].join('\n');

const count = (n: number): string => n.toLocaleString('en-US');
const percent = (share: number): string => `${(share * 100).toFixed(1)}%`;
const truncate = (text: string, max: number): string =>
  [...text].length <= max ? text : `${[...text].slice(0, max - 1).join('')}…`;

/** Nested settings as dotted keys, so a table can show them one per row. */
const flatten = (value: Record<string, unknown>, prefix = ''): [string, unknown][] =>
  Object.entries(value).flatMap(([key, v]) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? flatten(v as Record<string, unknown>, `${prefix}${key}.`)
      : [[`${prefix}${key}`, Array.isArray(v) ? JSON.stringify(v) : v] as [string, unknown]],
  );

const frontMatter = (card: DatasetCardInput): string => {
  const others = card.files.filter(({ file }) => DATA_FILE.test(file) && file !== 'dpo.jsonl');
  const configs: [name: string, path: string][] = [['default', 'dpo.jsonl']];
  // Config names must be unique: pairs.jsonl and pairs.parquet are `pairs` and `pairs-parquet`.
  for (const { file } of others) {
    const name = configName(file);
    const taken = configs.some(([n]) => n === name);
    configs.push([taken ? `${name}-${file.split('.').pop()}` : name, file]);
  }
  return [
    '---',
    `license: ${yamlScalar(card.license ?? 'other')}`,
    ...(card.title ? [`pretty_name: ${yamlScalar(card.title)}`] : []),
    'task_categories:',
    '  - text-generation',
    'tags:',
    '  - dpo',
    '  - preference',
    '  - safety',
    '  - synthetic',
    'size_categories:',
    `  - ${yamlScalar(sizeCategory(card.pairs))}`,
    'configs:',
    ...configs.flatMap(([name, path]) => [
      `  - config_name: ${yamlScalar(name)}`,
      '    data_files:',
      '      - split: train',
      `        path: ${yamlScalar(path)}`,
    ]),
    '---',
  ].join('\n');
};

const HOW_IT_WAS_BUILT = [
  '0. **Reversed instruction tuning** (paper) — a model that writes the instruction a response answers; here the `induce` model, prompted with reversed examples or tuned on reversed pairs.',
  '1. **Instruction induction** (`induce`) — each input text gets the instruction it answers; the text becomes the *rejected* response.',
  '2. **Low-quality instruction filter** (`filter`) — a judge model drops instructions that are incoherent or would not elicit the text.',
  '3. **Preferred response generation** (`respond`) — an expert model writes the *chosen* response to each instruction.',
  '4. **Expert evaluation** (`evaluate`) — a judge model scores each pair and keeps those whose chosen response is safe, on-topic and preferred.',
].join('\n');

const figuresSection = (figures: DatasetCardInput['figures']): string => {
  const lines: string[] = [];
  if (figures?.stockRefusalShare !== undefined) {
    lines.push(`- Stock refusals among chosen responses: ${percent(figures.stockRefusalShare)}`);
  }
  if (figures?.distinct2 !== undefined) {
    lines.push(`- Distinct-2 of chosen responses: ${figures.distinct2.toFixed(3)}`);
  }
  const top = figures?.topChosen ?? [];
  if (top.length > 0) {
    lines.push(
      '',
      `Most frequent chosen responses (truncated to ${CARD_QUOTE_CHARS} characters):`,
      '',
      table(
        ['count', 'chosen response'],
        top.map(({ text, count: n }) => [count(n), truncate(text, CARD_QUOTE_CHARS)]),
      ),
    );
  }
  return lines.length > 0 ? lines.join('\n') : 'No quality figures were computed for this run.';
};

/**
 * A Hugging Face dataset card (README.md) for a run: YAML front matter, then what the dataset holds,
 * how it was built, the counts, models, settings, quality figures, files and known limitations.
 * Quotes no data except the most frequent chosen responses, truncated.
 */
export function datasetCard(input: DatasetCardInput): string {
  const card = DatasetCardInput.parse(input);
  const title = card.title ?? `Safer-Instruct preference dataset (run ${card.runId})`;
  // In pipeline order: the stages record lists them so; stages it lacks go last.
  const stageOrder = Object.keys(card.stages);
  const rank = (stage: string) =>
    stageOrder.includes(stage) ? stageOrder.indexOf(stage) : stageOrder.length;
  const rejectStages = Object.entries(card.rejectsByStage).sort(([a], [b]) => rank(a) - rank(b));
  const rejectRows = rejectStages.flatMap(([stage, reasons]) =>
    Object.entries(reasons)
      .sort(([, a], [, b]) => b - a)
      .map(([reason, n]) => [stage, reason, count(n)]),
  );
  const modelStages = [...new Set([...Object.keys(card.models), ...Object.keys(card.templates)])];
  const quality = flatten(card.quality ?? {});
  const thresholds = Object.entries(card.thresholds ?? {});
  const limitations = [...STANDING_LIMITATIONS, ...(card.limitations ?? [])];

  return `${[
    frontMatter(card),
    CARD_MARK,
    '',
    `# ${line(title)}`,
    '',
    '## Summary',
    '',
    `${count(card.pairs)} preference pairs (prompt, chosen, rejected) built with the Safer-Instruct method from ` +
      `${code(card.input.key)} (${count(card.input.records)} records) by run ${code(card.runId)} on ${card.created}. ` +
      `${count(card.rejects)} records were rejected on the way, each with its stage and reason.`,
    '',
    '> **Content warning**: the *rejected* responses are harmful or offensive texts. ' +
      'Use this dataset for research on safety alignment only.',
    '',
    '## How it was built',
    '',
    HOW_IT_WAS_BUILT,
    '',
    'Deduplication of texts and of instructions, and a merge that accounts for every input record, ' +
      'run between these stages.',
    '',
    '## Counts per stage',
    '',
    table(
      ['stage', 'in', 'out', 'rejected'],
      Object.entries(card.stages).map(([stage, s]) => [stage, count(s.in), count(s.out), count(s.rejected)]),
    ),
    '',
    '## Rejects by reason',
    '',
    rejectRows.length > 0 ? table(['stage', 'reason', 'rejects'], rejectRows) : 'No record was rejected.',
    '',
    '## Pairs per category',
    '',
    table(
      ['category', 'pairs'],
      Object.entries(card.categories)
        .sort(([, a], [, b]) => b - a)
        .map(([category, n]) => [category, count(n)]),
    ),
    '',
    '## Models and prompt templates',
    '',
    table(
      ['stage', 'model', 'template hash'],
      modelStages.map((stage) => [stage, card.models[stage] ?? '—', card.templates[stage] ?? '—']),
    ),
    '',
    '## Filters and thresholds',
    '',
    thresholds.length > 0
      ? table(['judging stage', 'lowest score kept (1-5)'], thresholds)
      : 'No judge thresholds were recorded.',
    '',
    quality.length > 0
      ? table(
          ['quality setting', 'value'],
          quality.map(([key, value]) => [key, value]),
        )
      : 'No quality settings were recorded.',
    '',
    '## Quality figures',
    '',
    figuresSection(card.figures),
    '',
    '## Files',
    '',
    table(
      ['file', 'format', 'description'],
      card.files.map(({ file, format, description }) => [file, format, description]),
    ),
    '',
    '## Known limitations',
    '',
    limitations.map((limitation) => `- ${line(limitation)}`).join('\n'),
    '',
    '## Citation',
    '',
    'The method is from:',
    '',
    '```bibtex',
    '@inproceedings{shi2024saferinstruct,',
    '  title     = {Safer-Instruct: Aligning Language Models with Automated Preference Data},',
    '  author    = {Shi, Taiwei and Chen, Kai and Zhao, Jieyu},',
    '  booktitle = {Proceedings of the 2024 Conference of the North American Chapter of the Association for Computational Linguistics: Human Language Technologies (NAACL)},',
    '  year      = {2024},',
    '  eprint    = {2311.08685},',
    '  archivePrefix = {arXiv},',
    '  url       = {https://arxiv.org/abs/2311.08685},',
    '}',
    '```',
  ].join('\n')}\n`;
}
