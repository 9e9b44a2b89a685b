import { describe, expect, it } from 'vitest';
import {
  type DatasetCardInput,
  datasetCard,
  NO_CATEGORY,
  STANDING_LIMITATIONS,
  sizeCategory,
} from '../../lib/pipeline/export/dataset-card.js';

const cardInput = (fields: Partial<DatasetCardInput> = {}): DatasetCardInput => ({
  runId: 'run-2024-06-01-abc',
  created: '2024-06-01T12:00:00.000Z',
  input: { key: 'incoming/posts.jsonl', records: 1_500 },
  pairs: 1_234,
  rejects: 266,
  stages: {
    split: { in: 1_500, out: 1_480, rejected: 20 },
    'dedup-texts': { in: 1_480, out: 1_450, rejected: 30 },
    induce: { in: 1_450, out: 1_440, rejected: 10 },
    'dedup-instructions': { in: 1_440, out: 1_420, rejected: 20 },
    filter: { in: 1_420, out: 1_300, rejected: 120 },
    respond: { in: 1_300, out: 1_290, rejected: 10 },
    evaluate: { in: 1_290, out: 1_234, rejected: 56 },
    merge: { in: 1_234, out: 1_234, rejected: 0 },
  },
  rejectsByStage: {
    split: { 'text-too-long': 15, 'empty-text': 5 },
    filter: { 'incoherent-instruction': 77, 'does-not-elicit': 43 },
    evaluate: { 'low-score': 56 },
  },
  categories: { hate: 700, 'self-harm': 434, [NO_CATEGORY]: 100 },
  models: { induce: 'llama-3.1-8b', filter: 'amazon.nova-pro-v1:0', respond: 'amazon.nova-pro-v1:0' },
  templates: { induce: 'tpl-induce-1a2b', filter: 'tpl-filter-3c4d', respond: 'tpl-respond-5e6f' },
  quality: { nearDuplicateThreshold: 0.8, lengths: { chosen: { min: 20, max: 8000 } } },
  thresholds: { filter: 3, evaluate: 4 },
  figures: {
    stockRefusalShare: 0.042,
    distinct2: 0.613,
    topChosen: [
      { text: 'I cannot help with that | but here is a safer option.', count: 5 },
      { text: `${'long '.repeat(60)}end`, count: 3 },
    ],
  },
  files: [
    { file: 'dpo.jsonl', format: 'dpo', description: 'prompt, chosen, rejected' },
    { file: 'conversational.jsonl', format: 'conversational', description: 'message lists' },
    { file: 'nova-dpo.jsonl', format: 'nova', description: 'Amazon Nova DPO' },
    { file: 'pairs.parquet', format: 'parquet', description: 'pairs with metadata' },
  ],
  limitations: ['Only English inputs were tried.'],
  ...fields,
});

/** The YAML front matter's lines, without the fences. */
const frontMatter = (card: string): string[] => {
  const match = /^---\n([\s\S]*?)\n---\n/.exec(card);
  if (!match?.[1]) throw new Error('no front matter');
  return match[1].split('\n');
};

/** The Markdown section under a `## ` heading. */
const section = (card: string, heading: string): string => {
  const start = card.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`no section ${heading}`);
  const end = card.indexOf('\n## ', start + 1);
  return card.slice(start, end < 0 ? undefined : end);
};

describe('sizeCategory', () => {
  it.each([
    [0, 'n<1K'],
    [999, 'n<1K'],
    [1_000, '1K<n<10K'],
    [12_000, '10K<n<100K'],
    [100_000, '100K<n<1M'],
    [9_999_999, '1M<n<10M'],
    [10_000_000, '10M<n<100M'],
  ])('puts %i pairs in the %s bucket', (pairs, bucket) => {
    // Act
    const category = sizeCategory(pairs);

    // Assess
    expect(category).toBe(bucket);
  });
});

describe('datasetCard', () => {
  it('opens with YAML front matter holding license, task, tags, size and configs', () => {
    // Act
    const lines = frontMatter(datasetCard(cardInput()));

    // Assess
    expect(lines).toEqual([
      'license: other',
      'task_categories:',
      '  - text-generation',
      'tags:',
      '  - dpo',
      '  - preference',
      '  - safety',
      '  - synthetic',
      'size_categories:',
      '  - 1K<n<10K',
      'configs:',
      '  - config_name: default',
      '    data_files:',
      '      - split: train',
      '        path: dpo.jsonl',
      '  - config_name: conversational',
      '    data_files:',
      '      - split: train',
      '        path: conversational.jsonl',
      '  - config_name: nova-dpo',
      '    data_files:',
      '      - split: train',
      '        path: nova-dpo.jsonl',
      '  - config_name: pairs',
      '    data_files:',
      '      - split: train',
      '        path: pairs.parquet',
    ]);
  });

  it('uses the given license and title, quoting what YAML would misread', () => {
    // Act
    const lines = frontMatter(datasetCard(cardInput({ license: 'cc-by-nc-4.0', title: 'Safety: pairs #1' })));

    // Assess
    expect(lines).toContain('license: cc-by-nc-4.0');
    expect(lines).toContain('pretty_name: "Safety: pairs #1"');
  });

  it.each([
    [0, 'n<1K'],
    [999, 'n<1K'],
    [1_000, '1K<n<10K'],
    [12_000, '10K<n<100K'],
  ])('sizes a card of %i pairs as %s', (pairs, bucket) => {
    // Act
    const lines = frontMatter(datasetCard(cardInput({ pairs })));

    // Assess
    expect(lines[lines.indexOf('size_categories:') + 1]).toBe(`  - ${bucket}`);
  });

  it('tables the counts per stage in the order given', () => {
    // Act
    const counts = section(datasetCard(cardInput()), 'Counts per stage');

    // Assess
    const rows = counts
      .split('\n')
      .filter((l) => l.startsWith('| ') && !l.startsWith('| stage') && !l.startsWith('| ---'));
    expect(rows).toEqual([
      '| split | 1,500 | 1,480 | 20 |',
      '| dedup-texts | 1,480 | 1,450 | 30 |',
      '| induce | 1,450 | 1,440 | 10 |',
      '| dedup-instructions | 1,440 | 1,420 | 20 |',
      '| filter | 1,420 | 1,300 | 120 |',
      '| respond | 1,300 | 1,290 | 10 |',
      '| evaluate | 1,290 | 1,234 | 56 |',
      '| merge | 1,234 | 1,234 | 0 |',
    ]);
  });

  it('tables rejects by stage and reason, pairs per category, models and templates', () => {
    // Act
    const card = datasetCard(cardInput());

    // Assess
    expect(section(card, 'Rejects by reason')).toContain('| filter | incoherent-instruction | 77 |');
    expect(section(card, 'Rejects by reason')).toContain('| evaluate | low-score | 56 |');
    expect(section(card, 'Pairs per category')).toContain('| hate | 700 |');
    expect(section(card, 'Pairs per category')).toContain('| (none) | 100 |');
    expect(section(card, 'Models and prompt templates')).toContain(
      '| filter | amazon.nova-pro-v1:0 | tpl-filter-3c4d |',
    );
  });

  it('shows thresholds, quality settings as dotted keys, and the quality figures', () => {
    // Act
    const card = datasetCard(cardInput());

    // Assess
    expect(section(card, 'Filters and thresholds')).toContain('| evaluate | 4 |');
    expect(section(card, 'Filters and thresholds')).toContain('| lengths.chosen.max | 8000 |');
    expect(section(card, 'Quality figures')).toContain('Stock refusals among chosen responses: 4.2%');
    expect(section(card, 'Quality figures')).toContain('Distinct-2 of chosen responses: 0.613');
  });

  it('escapes a pipe in a chosen response and truncates it to 120 characters', () => {
    // Act
    const figures = section(datasetCard(cardInput()), 'Quality figures');

    // Assess
    expect(figures).toContain('| 5 | I cannot help with that \\| but here is a safer option. |');
    const long = figures.split('\n').find((l) => l.startsWith('| 3 | long'));
    expect(long?.slice('| 3 | '.length, -' |'.length)).toHaveLength(120);
    expect(long).toContain('…');
  });

  it('lists the standing limitations and the run’s own', () => {
    // Act
    const limitations = section(datasetCard(cardInput()), 'Known limitations');

    // Assess
    for (const limitation of STANDING_LIMITATIONS) expect(limitations).toContain(`- ${limitation}`);
    expect(limitations).toContain('- Only English inputs were tried.');
    expect(limitations).toMatch(/not by humans/);
    expect(limitations).toMatch(/not verified/);
    expect(limitations).toMatch(/offensive.*safety alignment only/);
    expect(limitations).toMatch(/lexical \(MinHash.*not semantic/);
  });

  it('has every section, the five stages and the citation of the paper', () => {
    // Act
    const card = datasetCard(cardInput());

    // Assess
    const headings = card.split('\n').filter((l) => l.startsWith('## '));
    expect(headings).toEqual([
      '## Summary',
      '## How it was built',
      '## Counts per stage',
      '## Rejects by reason',
      '## Pairs per category',
      '## Models and prompt templates',
      '## Filters and thresholds',
      '## Quality figures',
      '## Files',
      '## Known limitations',
      '## Citation',
    ]);
    expect(section(card, 'How it was built').match(/^\d\. \*\*/gm)).toHaveLength(5);
    expect(section(card, 'Citation')).toContain('2311.08685');
    expect(section(card, 'Citation')).toContain('Shi, Taiwei and Chen, Kai and Zhao, Jieyu');
  });

  it('says so when a run computed no quality figures and rejected nothing', () => {
    // Act
    const card = datasetCard(cardInput({ figures: undefined, rejectsByStage: {}, rejects: 0 }));

    // Assess
    expect(section(card, 'Quality figures')).toContain('No quality figures were computed');
    expect(section(card, 'Rejects by reason')).toContain('No record was rejected.');
  });

  it('refuses an input that is not a card input', () => {
    // Prepare
    const input = { ...cardInput(), pairs: -1 };

    // Act
    const attempt = () => datasetCard(input);

    // Assess
    expect(attempt).toThrow();
  });
});

describe('datasetCard config names and reject order', () => {
  it('gives each data file a config name of its own, and lists rejects in pipeline order', () => {
    // Prepare
    const input = {
      runId: 'run-1',
      created: '2026-11-30T12:00:00.000Z',
      input: { key: 'incoming/x.jsonl', records: 3 },
      pairs: 1,
      rejects: 2,
      stages: { split: { in: 3, out: 2, rejected: 1 }, evaluate: { in: 2, out: 1, rejected: 1 } },
      rejectsByStage: { evaluate: { 'low-score': 1 }, split: { 'empty-text': 1 } },
      categories: { hate: 1 },
      models: {},
      templates: {},
      files: ['pairs.jsonl', 'dpo.jsonl', 'pairs.parquet'].map((file) => ({
        file,
        format: 'x',
        description: 'y',
      })),
    };

    // Act
    const card = datasetCard(input);

    // Assess
    const names = [...card.matchAll(/config_name: (\S+)/g)].map((m) => m[1]);
    expect(names).toEqual(['default', 'pairs', 'pairs-parquet']);
    expect(card.indexOf('| split | empty-text |')).toBeLessThan(card.indexOf('| evaluate | low-score |'));
  });
});
