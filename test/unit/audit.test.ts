import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { describe, expect, it } from 'vitest';
import {
  AUDIT_RULES,
  type AuditReport,
  AuditReport as AuditReportSchema,
  type AuditRule,
  auditDataset,
  parseFailOn,
} from '../../lib/audit/audit.js';
import { type OpenDatasetOptions, openDataset } from '../../lib/audit/read-dataset.js';
import { auditCommand } from '../../lib/cli/audit-command.js';
import { QualityConfig } from '../../lib/pipeline/config.js';
import { InputError } from '../../lib/pipeline/errors.js';
import { captured } from '../support/cli.js';
import { tempDir } from '../support/temp.js';

const repo = new URL('../..', import.meta.url).pathname;
const JSONL = join(repo, 'test/fixtures/audit-planted.jsonl');
const CSV = join(repo, 'test/fixtures/audit-planted.csv');

/**
 * The defects planted in audit-planted.jsonl: rows that break each rule, overall and per category.
 * 46 rows: cooking 13, science 19, travel 14.
 */
const PLANTED: Record<AuditRule, { overall: number; cooking: number; science: number; travel: number }> = {
  'malformed-row': { overall: 0, cooking: 0, science: 0, travel: 0 },
  'empty-side': { overall: 3, cooking: 1, science: 1, travel: 1 },
  'spreadsheet-artifact': { overall: 2, cooking: 1, science: 0, travel: 1 },
  whitespace: { overall: 5, cooking: 1, science: 2, travel: 2 },
  'too-short': { overall: 2, cooking: 0, science: 1, travel: 1 },
  'too-long': { overall: 1, cooking: 0, science: 1, travel: 0 },
  'fragment-instruction': { overall: 2, cooking: 1, science: 0, travel: 1 },
  'chosen-equals-rejected': { overall: 3, cooking: 1, science: 1, travel: 1 },
  'chosen-near-rejected': { overall: 1, cooking: 0, science: 1, travel: 0 },
  'duplicate-prompt': { overall: 4, cooking: 1, science: 2, travel: 1 },
  'near-duplicate-prompt': { overall: 2, cooking: 0, science: 1, travel: 1 },
  'duplicate-pair': { overall: 1, cooking: 0, science: 1, travel: 0 },
  'duplicate-rejected': { overall: 2, cooking: 0, science: 2, travel: 0 },
  'stock-refusal': { overall: 5, cooking: 1, science: 3, travel: 1 },
  'near-identical-chosen-excess': { overall: 2, cooking: 1, science: 0, travel: 1 },
};

const DEFAULTS = QualityConfig.parse({});

const audit = async (path: string, options: Partial<OpenDatasetOptions> = {}, quality = DEFAULTS) =>
  auditDataset(await openDataset(path, { maxLineBytes: 1024 * 1024, ...options }), { quality });

/** Each rule's count, overall and per category, in the shape of {@link PLANTED}. */
function countsOf(report: AuditReport) {
  const section = (name: string) => report.categories.find((c) => c.name === name);
  return Object.fromEntries(
    AUDIT_RULES.map((rule) => [
      rule,
      {
        overall: report.overall.rules[rule].count,
        cooking: section('cooking')?.rules[rule].count,
        science: section('science')?.rules[rule].count,
        travel: section('travel')?.rules[rule].count,
      },
    ]),
  );
}

/** Runs the audit command in process and captures what it prints. */
const cli = (...args: string[]) => captured(auditCommand, args);

const fixtureRows = () =>
  readFileSync(JSONL, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map(
      (line) => JSON.parse(line) as { prompt: string; chosen: string; rejected: string; category: string },
    );

/** A file of the given text in a fresh temporary directory. */
function fileOf(name: string, text: string): string {
  const path = join(tempDir(), name);
  writeFileSync(path, text);
  return path;
}

describe('auditDataset on planted defects', () => {
  it('counts each planted defect exactly, overall and per category', async () => {
    // Act
    const report = await audit(JSONL);

    // Assess
    expect(countsOf(report)).toEqual(PLANTED);
    expect(report.overall).toMatchObject({ rows: 46, pairs: 46 });
    expect(report.categories.map((c) => [c.name, c.rows])).toEqual([
      ['cooking', 13],
      ['science', 19],
      ['travel', 14],
    ]);
    expect(report.fields).toEqual({
      prompt: 'prompt',
      chosen: 'chosen',
      rejected: 'rejected',
      category: 'category',
    });
  });

  it('rates each rule over the rows of its section', async () => {
    // Act
    const report = await audit(JSONL);

    // Assess
    expect(report.overall.rules['stock-refusal'].rate).toBeCloseTo(5 / 46, 10);
    expect(report.categories.find((c) => c.name === 'science')?.rules['stock-refusal'].rate).toBeCloseTo(
      3 / 19,
      10,
    );
    expect(report.overall.stockRefusalShare).toBeCloseTo(5 / 46, 10);
  });

  it('counts a row once under a rule when several of its fields break it, showing the first', async () => {
    // Act
    const report = await audit(JSONL);

    // Assess
    const { whitespace } = report.overall.rules;
    expect(whitespace.count).toBe(5);
    expect(whitespace.examples.filter((e) => e.line === 17)).toEqual([
      {
        line: 17,
        field: 'prompt',
        text: ' How do I say thank you in Japanese?',
        detail: 'leading whitespace',
      },
    ]);
  });

  it('gives examples with their line, field, text and why, up to the number asked for', async () => {
    // Act
    const report = await auditDataset(await openDataset(JSONL, { maxLineBytes: 1 << 20 }), {
      quality: DEFAULTS,
      examples: 2,
    });

    // Assess
    expect(report.overall.rules['duplicate-prompt'].examples).toEqual([
      {
        line: 9,
        field: 'prompt',
        text: 'How do I boil an egg so the yolk stays soft?',
        detail: 'same as line 1',
      },
      {
        line: 21,
        field: 'prompt',
        text: 'what should i pack for a weekend hiking trip?',
        detail: 'same as line 13',
      },
    ]);
    expect(report.overall.rules['near-identical-chosen-excess'].examples.map((e) => e.detail)).toEqual([
      'response 6 of a group near-identical to line 11; at most 5 are kept',
      'response 7 of a group near-identical to line 11; at most 5 are kept',
    ]);
    expect(report.categories.find((c) => c.name === 'travel')?.rules['empty-side'].examples).toEqual([
      { line: 15, field: 'chosen', text: '   ', detail: 'chosen is blank' },
    ]);
  });

  it('cuts example texts to 160 characters, the last an ellipsis', async () => {
    // Act
    const report = await audit(JSONL);

    // Assess
    const [example] = report.overall.rules['too-long'].examples;
    expect(example?.text).toHaveLength(160);
    expect(example?.text.endsWith('…')).toBe(true);
    expect(example?.detail).toBe('2589 characters, at most 2000 expected');
  });

  it('lists the most frequent chosen responses with their counts, near spellings apart', async () => {
    // Act
    const report = await audit(JSONL);

    // Assess
    expect(report.topChosen.slice(0, 4).map((t) => [t.count, t.text.slice(0, 30)])).toEqual([
      [5, 'That is a great question! The '],
      [4, "Sorry, but I can't assist with"],
      [2, 'They show the immune system a '],
      [2, 'That is a great question! The '],
    ]);
    expect(report.topChosen).toHaveLength(10);
  });

  it('applies the quality settings it is given', async () => {
    // Prepare
    const quality = QualityConfig.parse({
      maxNearIdenticalChosen: 3,
      lengths: { chosen: { min: 1, max: 8000 }, instruction: { min: 10, max: 3000 } },
    });

    // Act
    const report = await audit(JSONL, {}, quality);

    // Assess
    expect(report.overall.rules['near-identical-chosen-excess'].count).toBe(4 + 1);
    expect(report.overall.rules['too-short'].count).toBe(0);
    expect(report.overall.rules['too-long'].count).toBe(0);
  });
});

describe('auditDataset across formats', () => {
  it('finds the same counts in the CSV with instruction,rejected,chosen,label columns', async () => {
    // Prepare
    const expected = countsOf(await audit(JSONL));

    // Act
    const report = await audit(CSV);

    // Assess
    expect(report.format).toBe('csv');
    expect(report.fields).toEqual({
      prompt: 'instruction',
      chosen: 'chosen',
      rejected: 'rejected',
      category: 'label',
    });
    expect(countsOf(report)).toEqual(expected);
    expect(report.overall.rows).toBe(46);
  });

  it('finds the same counts in Parquet written with hyparquet-writer', async () => {
    // Prepare
    const rows = fixtureRows();
    const column = (name: 'prompt' | 'chosen' | 'rejected' | 'category') => ({
      name,
      data: rows.map((r) => r[name]),
      type: 'STRING' as const,
    });
    const bytes = parquetWriteBuffer({
      columnData: [column('prompt'), column('chosen'), column('rejected'), column('category')],
    });
    const path = join(tempDir(), 'planted.parquet');
    writeFileSync(path, new Uint8Array(bytes));
    const expected = countsOf(await audit(JSONL));

    // Act
    const report = await audit(path);

    // Assess
    expect(report.format).toBe('parquet');
    expect(countsOf(report)).toEqual(expected);
    expect(report.overall.rules['duplicate-prompt'].examples[0]).toMatchObject({ line: 9 });
  });

  it('reads a .tsv with tab-separated columns', async () => {
    // Prepare
    const path = fileOf(
      'pairs.tsv',
      'prompt\tchosen\trejected\n' +
        'How do I bake bread?\tMix flour, water, salt and yeast, then let it rise.\tBuy some.\n' +
        'How do I bake bread?\tKnead the dough and bake it at a high heat.\tNo idea.\n',
    );

    // Act
    const report = await audit(path);

    // Assess
    expect(report.format).toBe('tsv');
    expect(report.overall.rows).toBe(2);
    expect(report.overall.rules['duplicate-prompt'].count).toBe(1);
    expect(report.categories).toEqual([]);
  });

  it('reads a CSV record holding a U+FFFD character as text, not as bad bytes', async () => {
    // Prepare
    const path = fileOf(
      'pairs.csv',
      'instruction,rejected,chosen\nWhat is a caf\uFFFD?,No way.,A small restaurant that serves coffee.\n',
    );

    // Act
    const report = await audit(path);

    // Assess
    expect(report.overall.rules['malformed-row'].count).toBe(0);
    expect(report.overall.pairs).toBe(1);
  });

  it('reports a bad JSON line and a non-string field as malformed rows, with their lines', async () => {
    // Prepare
    const good = (n: number) =>
      JSON.stringify({
        prompt: `Name a fruit that is red, number ${n}.`,
        chosen: 'A strawberry is red.',
        rejected: 'Blue.',
      });
    const path = fileOf(
      'pairs.jsonl',
      [
        good(1),
        '{"prompt": "broken',
        '',
        JSON.stringify({ prompt: 5, chosen: 'Six.', rejected: 'Seven.' }),
        good(2),
      ]
        .map((line) => `${line}\n`)
        .join(''),
    );

    // Act
    const report = await audit(path);

    // Assess
    const malformed = report.overall.rules['malformed-row'];
    expect(report.overall).toMatchObject({ rows: 4, pairs: 2 });
    expect(malformed.count).toBe(2);
    expect(malformed.rate).toBe(0.5);
    expect(malformed.examples.map((e) => [e.line, e.field, e.detail.split(':')[0]])).toEqual([
      [2, 'row', 'invalid-json'],
      [4, 'row', 'not-a-string'],
    ]);
    expect(malformed.examples[1]?.detail).toBe('not-a-string: "prompt" is number, not a string');
  });

  it('counts a row missing a field as malformed, and a missing category as (none)', async () => {
    // Prepare
    const path = fileOf(
      'pairs.jsonl',
      [
        {
          prompt: 'Name a red fruit for a salad.',
          chosen: 'A strawberry works well.',
          rejected: 'Blue.',
          category: 'food',
        },
        { prompt: 'Name a green fruit for a salad.', chosen: 'A kiwi works well here.', rejected: 'Red.' },
        { prompt: 'Name a yellow fruit for a salad.', rejected: 'Purple.', category: 'food' },
      ]
        .map((r) => JSON.stringify(r))
        .join('\n'),
    );

    // Act
    const report = await audit(path);

    // Assess
    expect(report.overall.rules['malformed-row'].examples).toEqual([
      { line: 3, field: 'row', text: '', detail: 'missing-field: no field "chosen"' },
    ]);
    expect(report.categories.map((c) => [c.name, c.rows])).toEqual([
      ['(none)', 1],
      ['food', 1],
    ]);
  });

  it('takes the field names it is given over the ones it would find', async () => {
    // Prepare
    const path = fileOf(
      'pairs.jsonl',
      JSON.stringify({
        question: 'What is the capital of France?',
        good: 'Paris is the capital of France.',
        bad: 'Rome.',
        topic: 'geo',
      }),
    );

    // Act
    const report = await audit(path, {
      fields: { prompt: 'question', chosen: 'good', rejected: 'bad', category: 'topic' },
    });

    // Assess
    expect(report.fields).toEqual({ prompt: 'question', chosen: 'good', rejected: 'bad', category: 'topic' });
    expect(report.overall.pairs).toBe(1);
    expect(report.categories.map((c) => c.name)).toEqual(['geo']);
  });

  it('throws an InputError naming the columns and the flag when a CSV has no prompt column', async () => {
    // Prepare
    const path = fileOf('pairs.csv', 'question,chosen,rejected\nWhat?,This.,That.\n');

    // Act
    const opening = openDataset(path, { maxLineBytes: 1 << 20 });

    // Assess
    await expect(opening).rejects.toThrow(InputError);
    await expect(opening).rejects.toThrow(
      `${path}: no column "prompt" or "instruction" (columns: question, chosen, rejected); ` +
        'choose one with --prompt-field',
    );
  });
});

describe('parseFailOn', () => {
  it('reads a fraction or a percentage', () => {
    // Act
    const limits = [
      parseFailOn('stock-refusal=0.1'),
      parseFailOn('empty-side=5%'),
      parseFailOn('whitespace=0'),
    ];

    // Assess
    expect(limits).toEqual([
      { rule: 'stock-refusal', maxRate: 0.1 },
      { rule: 'empty-side', maxRate: 0.05 },
      { rule: 'whitespace', maxRate: 0 },
    ]);
  });

  it.each([
    'stock-refusal',
    'stock-refusal=',
    'stock-refusal=lots',
    'stock-refusal=1.5',
    'stock-refusal=-0.1',
  ])('refuses %j', (spec) => {
    // Act
    const parse = () => parseFailOn(spec);

    // Assess
    expect(parse).toThrow(/the max rate must be a fraction from 0 to 1/);
  });
});

describe('safer-instruct audit', () => {
  it('prints a table with the overall count and rate of each rule and a column per category', async () => {
    // Act
    const { code, out, err } = await cli(JSONL);

    // Assess
    expect(code).toBe(0);
    expect(err).toBe('');
    expect(out).toContain(`${JSONL} (jsonl): 46 rows, 46 pairs, 3 categories`);
    expect(out).toMatch(/^rule\s+overall\s+cooking\s+science\s+travel$/m);
    expect(out).toMatch(/^stock-refusal\s+5\s+10\.9%\s+1\s+7\.7%\s+3\s+15\.8%\s+1\s+7\.1%$/m);
    expect(out).toMatch(/^malformed-row\s+0\s+0\.0%\s+-\s+-\s+-$/m);
    expect(out).toMatch(/^stock-refusal share\s+10\.9%\s+7\.7%\s+15\.8%\s+7\.1%$/m);
    expect(out).toContain(`    line 15 chosen: "   " (chosen is blank)`);
    expect(out).toContain(`  4  "Sorry, but I can't assist with that."`);
  });

  it('prints one JSON document that validates against AuditReport with --json', async () => {
    // Act
    const { code, out } = await cli(JSONL, '--json', '--examples', '1');

    // Assess
    expect(code).toBe(0);
    const report = AuditReportSchema.parse(JSON.parse(out));
    expect(report.overall.rules['duplicate-prompt']).toMatchObject({ count: 4 });
    expect(report.overall.rules['duplicate-prompt'].examples).toHaveLength(1);
    expect(report.quality).toEqual(DEFAULTS);
  });

  it('exits 2 and names the rule when a --fail-on limit is exceeded', async () => {
    // Act
    const { code, out, err } = await cli(
      JSONL,
      '--fail-on',
      'stock-refusal=0.1',
      '--fail-on',
      'empty-side=10%',
    );

    // Assess
    expect(code).toBe(2);
    expect(out).toContain('stock-refusal');
    expect(err).toBe(
      'safer-instruct: stock-refusal rate 10.9% is above the limit of 10.0% (--fail-on stock-refusal=0.1)\n',
    );
  });

  it('exits 0 when every rate is within its --fail-on limit', async () => {
    // Act
    const { code, err } = await cli(
      JSONL,
      '--json',
      '--fail-on',
      'stock-refusal=0.11',
      '--fail-on',
      'malformed-row=0',
    );

    // Assess
    expect(code).toBe(0);
    expect(err).toBe('');
  });

  it.each([
    ['stock-refusals=0.1', 'unknown rule "stock-refusals"'],
    ['stock-refusal=often', 'the max rate must be a fraction from 0 to 1'],
  ])('exits 2 with a usage error naming the valid rules for --fail-on %s', async (spec, problem) => {
    // Act
    const { code, out, err } = await cli(JSONL, '--fail-on', spec);

    // Assess
    expect(code).toBe(2);
    expect(out).toBe('');
    expect(err).toContain(problem);
    expect(err).toContain(`the rules are ${AUDIT_RULES.join(', ')}`);
    expect(err).toContain('try: safer-instruct audit --help');
  });

  it.each([
    [[], 'audit takes one dataset file'],
    [[JSONL, '--examples', 'many'], '--examples takes a whole number of at least 0, not "many"'],
    [[JSONL, '--format', 'xlsx'], '--format takes one of jsonl, csv, tsv, parquet, not "xlsx"'],
    [[JSONL, '--no-such-flag'], "Unknown option '--no-such-flag'"],
  ])('exits 2 on the usage error in %j', async (args, message) => {
    // Act
    const { code, err } = await cli(...args);

    // Assess
    expect(code).toBe(2);
    expect(err).toContain(message);
  });

  it('exits 1 with one line naming a missing file', async () => {
    // Prepare
    const path = join(tempDir(), 'nowhere.jsonl');

    // Act
    const { code, out, err } = await cli(path);

    // Assess
    expect(code).toBe(1);
    expect(out).toBe('');
    expect(err).toBe(`safer-instruct: ${path}: no such file\n`);
  });

  it.each([
    ['empty.jsonl', '', 'the input is empty'],
    ['header-only.csv', 'prompt,chosen,rejected\n', 'no rows'],
    ['directory', undefined, 'not a file'],
    ['not-parquet.parquet', 'prompt,chosen,rejected\n', 'not a readable Parquet file'],
  ])('exits 1 with one line for %s', async (name, text, message) => {
    // Prepare
    const path = text === undefined ? tempDir() : fileOf(name, text);

    // Act
    const { code, err } = await cli(path);

    // Assess
    expect(code).toBe(1);
    expect(err.split('\n')).toHaveLength(2);
    expect(err).toMatch(new RegExp(`^safer-instruct: ${path}: .*${message}`));
  });

  it('takes thresholds and bounds from --config, and exits 1 on a config it cannot read', async () => {
    // Prepare
    const config = fileOf('config.json', JSON.stringify({ quality: { maxNearIdenticalChosen: 3 } }));

    // Act
    const configured = await cli(JSONL, '--json', '--config', config);
    const missing = await cli(JSONL, '--config', join(tempDir(), 'none.json'));

    // Assess
    expect(configured.code).toBe(0);
    expect(JSON.parse(configured.out).overall.rules['near-identical-chosen-excess'].count).toBe(5);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^safer-instruct: cannot read config .*none\.json: ENOENT\n$/);
  });

  it('prints its usage with --help and exits 0', async () => {
    // Act
    const { code, out } = await cli('--help');

    // Assess
    expect(code).toBe(0);
    expect(out).toContain('Usage: safer-instruct audit <dataset.jsonl|.csv|.tsv|.parquet> [options]');
    expect(out).toContain(AUDIT_RULES.join(', '));
  });
});
