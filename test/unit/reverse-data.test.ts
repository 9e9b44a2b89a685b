import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { reverseDataCommand } from '../../lib/cli/reverse-data-command.js';
import { ConfigError, InputError } from '../../lib/pipeline/errors.js';
import { REVERSED_TEMPLATE } from '../../lib/pipeline/prompts/induction.js';
import { templateHash } from '../../lib/pipeline/prompts/templates.js';
import { REVERSE_FORMATS } from '../../lib/reverse/formats.js';
import { type InstructionItem, readInstructions } from '../../lib/reverse/read-instructions.js';
import {
  type HeldoutExample,
  ReverseManifest,
  type ReverseReject,
  reverseData,
  reversePathsOf,
} from '../../lib/reverse/reverse-data.js';
import { captured } from '../support/cli.js';
import { readJsonlFile, tempDir } from '../support/temp.js';

const repo = new URL('../..', import.meta.url).pathname;
// Paths as a user would type them from the repository root, so the rejects' sources are stable.
const FIXTURES = relative(process.cwd(), join(repo, 'test/fixtures/reverse'));
const GOLDEN = join(repo, 'test/fixtures/reverse/golden');
const INPUTS = ['alpaca.json', 'alpaca.jsonl', 'dolly.jsonl', 'sharegpt.json', 'openai.jsonl'].map((name) =>
  join(FIXTURES, name),
);
/** A held-out share large enough that the tiny fixtures hold some examples out. */
const GOLDEN_HELDOUT = 0.25;

/**
 * Compares a file with its golden copy byte for byte. `UPDATE_GOLDEN=1 npx vitest run
 * test/unit/reverse-data.test.ts` rewrites the golden copies instead; review the diff before committing.
 */
function expectGolden(name: string, path: string): void {
  const actual = readFileSync(path, 'utf8');
  const golden = join(GOLDEN, name);
  if (process.env.UPDATE_GOLDEN === '1') writeFileSync(golden, actual);
  expect(actual, `${name} differs from its golden copy`).toBe(readFileSync(golden, 'utf8'));
}

/** A JSON Lines file of the given records in a fresh temporary directory. */
function jsonlFile(name: string, records: readonly unknown[], dir = tempDir()): string {
  const path = join(dir, name);
  writeFileSync(path, records.map((r) => `${JSON.stringify(r)}\n`).join(''));
  return path;
}

/** `n` distinct Alpaca records whose sides are long enough to keep. */
const distinct = (n: number, from = 0) =>
  Array.from({ length: n }, (_, i) => ({
    instruction: `Write one sentence about the number ${i + from}.`,
    output: `The number ${i + from} comes after the number ${i + from - 1}.`,
  }));

const runGolden = (format: (typeof REVERSE_FORMATS)[number]) =>
  reverseData({ inputs: INPUTS, out: join(tempDir(), 'train.jsonl'), format, heldout: GOLDEN_HELDOUT });

describe('reverseData golden files', () => {
  it.each(REVERSE_FORMATS)(
    'writes the %s training file of the fixtures exactly as its golden copy',
    async (format) => {
      // Act
      const { paths } = await runGolden(format);

      // Assess
      expectGolden(`${format}.jsonl`, paths.train);
    },
  );

  it('writes the held-out and rejects files of the fixtures exactly as their golden copies', async () => {
    // Act
    const { paths } = await runGolden('converse');

    // Assess
    expectGolden('heldout.jsonl', paths.heldout);
    expectGolden('rejects.jsonl', paths.rejects);
  });

  it('holds out and rejects the same examples whatever the format', async () => {
    // Act
    const runs = await Promise.all(REVERSE_FORMATS.map(runGolden));

    // Assess
    const files = runs.map(
      ({ paths }) => readFileSync(paths.heldout, 'utf8') + readFileSync(paths.rejects, 'utf8'),
    );
    expect(new Set(files).size).toBe(1);
  });
});

describe('reverseData', () => {
  it('puts every example and unreadable record in exactly one of the three files', async () => {
    // Prepare
    const items: InstructionItem[] = [];
    for (const input of INPUTS) for await (const item of readInstructions(input)) items.push(item);

    // Act
    const { counts, paths } = await runGolden('messages');

    // Assess
    const train = readJsonlFile(paths.train);
    const heldout = readJsonlFile<HeldoutExample>(paths.heldout);
    const rejects = readJsonlFile<ReverseReject>(paths.rejects);
    expect(counts).toMatchObject({ read: 26, examples: 20, train: 10, heldout: 5, rejected: 13 });
    expect([train.length, heldout.length, rejects.length]).toEqual([
      counts.train,
      counts.heldout,
      counts.rejected,
    ]);
    expect(train.length + heldout.length + rejects.length).toBe(items.length);
    const ids = [...heldout.map((e) => e.id), ...rejects.map((r) => r.id ?? `${r.source}:${r.line}`)];
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('counts each rejection under its reason', async () => {
    // Act
    const { counts } = await runGolden('nova');

    // Assess
    expect(counts.rejectedByReason).toEqual({
      'malformed-json': 2,
      'unknown-shape': 1,
      'non-text': 4,
      empty: 2,
      'too-short': 2,
      'too-long': 0,
      duplicate: 1,
      'duplicate-response': 1,
    });
  });

  it('rejects a pair that repeats an earlier one once normalized, naming the first', async () => {
    // Prepare
    const path = jsonlFile('dup.jsonl', [
      { instruction: 'Name a large planet.', output: 'Jupiter is a large planet.' },
      { instruction: '  name a LARGE\u200b planet. ', output: 'Jupiter is a large   planet.' },
    ]);

    // Act
    const { paths, counts } = await reverseData({
      inputs: [path],
      out: join(tempDir(), 't.jsonl'),
      format: 'alpaca',
      heldout: 0,
    });

    // Assess
    expect(counts.train).toBe(1);
    expect(readJsonlFile(paths.rejects)).toEqual([
      expect.objectContaining({
        line: 2,
        reason: 'duplicate',
        detail: 'the same instruction and response as dup.jsonl:1',
      }),
    ]);
  });

  it('rejects a response already kept with a different instruction as duplicate-response', async () => {
    // Prepare
    const path = jsonlFile('dup.jsonl', [
      { instruction: 'Name a large planet.', output: 'Jupiter is a large planet.' },
      { instruction: 'Which planet is large?', output: 'Jupiter is a large planet.' },
    ]);

    // Act
    const { paths } = await reverseData({
      inputs: [path],
      out: join(tempDir(), 't.jsonl'),
      format: 'alpaca',
      heldout: 0,
    });

    // Assess
    expect(readJsonlFile(paths.rejects)).toEqual([
      expect.objectContaining({
        line: 2,
        reason: 'duplicate-response',
        detail: 'the same response as dup.jsonl:1, with a different instruction',
      }),
    ]);
  });

  it('counts characters as code points and rejects sides outside the bounds', async () => {
    // Prepare
    const path = jsonlFile('lengths.jsonl', [
      { instruction: '👋👋👋👋👋', output: 'Five waving hands.' },
      { instruction: 'Wave five times.', output: 'x'.repeat(21) },
      { instruction: 'Wave four times.', output: 'Four waving hands' },
    ]);

    // Act
    const { paths, counts } = await reverseData({
      inputs: [path],
      out: join(tempDir(), 't.jsonl'),
      format: 'prompt-completion',
      heldout: 0,
      minChars: 5,
      maxChars: 20,
    });

    // Assess
    expect(counts.train).toBe(2);
    expect(readJsonlFile(paths.rejects)).toEqual([
      expect.objectContaining({ line: 2, reason: 'too-long', detail: 'response 21 characters; at most 20' }),
    ]);
  });

  it('rejects a side that is empty once normalized', async () => {
    // Prepare
    const path = jsonlFile('blank.jsonl', [
      { instruction: ' \u200b\t', output: 'A response of some length.' },
    ]);

    // Act
    const { paths } = await reverseData({
      inputs: [path],
      out: join(tempDir(), 't.jsonl'),
      format: 'converse',
    });

    // Assess
    expect(readJsonlFile(paths.rejects)).toEqual([
      expect.objectContaining({ reason: 'empty', detail: 'empty instruction' }),
    ]);
  });

  it('holds out the same examples whatever the order of the files', async () => {
    // Prepare
    const dir = tempDir();
    const a = jsonlFile('a.jsonl', distinct(40), dir);
    const b = jsonlFile('b.jsonl', distinct(40, 40), dir);
    const heldoutOf = async (inputs: string[]) => {
      const { paths } = await reverseData({
        inputs,
        out: join(tempDir(), 't.jsonl'),
        format: 'messages',
        heldout: 0.2,
      });
      return readJsonlFile<HeldoutExample>(paths.heldout)
        .map((e) => e.instruction)
        .sort();
    };

    // Act
    const [forward, backward] = [await heldoutOf([a, b]), await heldoutOf([b, a])];

    // Assess
    expect(forward.length).toBeGreaterThan(0);
    expect(backward).toEqual(forward);
  });

  it('only moves examples into the held-out file when the fraction rises', async () => {
    // Prepare
    const path = jsonlFile('many.jsonl', distinct(80));
    const heldoutAt = async (heldout: number) => {
      const { paths } = await reverseData({
        inputs: [path],
        out: join(tempDir(), 't.jsonl'),
        format: 'messages',
        heldout,
      });
      return readJsonlFile<HeldoutExample>(paths.heldout).map((e) => e.id);
    };

    // Act
    const [small, large] = [await heldoutAt(0.1), await heldoutAt(0.3)];

    // Assess
    expect(large.length).toBeGreaterThan(small.length);
    expect(large).toEqual(expect.arrayContaining(small));
  });

  it('holds nothing out at a fraction of 0', async () => {
    // Prepare
    const path = jsonlFile('many.jsonl', distinct(30));

    // Act
    const { paths, counts } = await reverseData({
      inputs: [path],
      out: join(tempDir(), 't.jsonl'),
      format: 'nova',
      heldout: 0,
    });

    // Assess
    expect(counts).toMatchObject({ train: 30, heldout: 0 });
    expect(readFileSync(paths.heldout, 'utf8')).toBe('');
  });

  it('writes the held-out file where --heldout-out says, and the others next to the training file', async () => {
    // Prepare
    const dir = tempDir();
    const path = jsonlFile('many.jsonl', distinct(5));

    // Act
    const { paths } = await reverseData({
      inputs: [path],
      out: join(dir, 'data/train.jsonl'),
      format: 'converse',
      heldoutOut: join(dir, 'eval/heldout.jsonl'),
    });

    // Assess
    expect(paths).toEqual({
      train: join(dir, 'data/train.jsonl'),
      heldout: join(dir, 'eval/heldout.jsonl'),
      rejects: join(dir, 'data/train.rejects.jsonl'),
      manifest: join(dir, 'data/train.manifest.json'),
    });
    for (const file of Object.values(paths)) expect(existsSync(file)).toBe(true);
  });

  it('records the format, the template version and hash, the inputs and the counts in the manifest', async () => {
    // Act
    const { paths, counts } = await runGolden('prompt-completion');

    // Assess
    const manifest = ReverseManifest.parse(JSON.parse(readFileSync(paths.manifest, 'utf8')));
    expect(manifest).toMatchObject({
      format: 'prompt-completion',
      template: { name: 'induce', version: 'reversed-v1', hash: templateHash(REVERSED_TEMPLATE) },
      settings: { heldout: GOLDEN_HELDOUT, minChars: 10, maxChars: 8000, shape: 'auto' },
      counts,
    });
    expect(manifest.inputs.map((i) => [i.path, i.read, i.examples])).toEqual([
      [INPUTS[0], 6, 5],
      [INPUTS[1], 6, 4],
      [INPUTS[2], 4, 4],
      [INPUTS[3], 4, 3],
      [INPUTS[4], 6, 4],
    ]);
  });

  it('throws an InputError and leaves no files behind when an input is missing', async () => {
    // Prepare
    const dir = tempDir();
    const missing = join(dir, 'missing.jsonl');

    // Act
    const run = reverseData({
      inputs: [INPUTS[0] as string, missing],
      out: join(dir, 'train.jsonl'),
      format: 'converse',
    });

    // Assess
    await expect(run).rejects.toThrow(InputError);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('throws an InputError and removes its partial files when an input breaks mid-run', async () => {
    // Prepare
    const dir = tempDir();
    const broken = join(dir, 'broken.json');
    writeFileSync(broken, '[{"instruction": ');

    // Act
    const run = reverseData({
      inputs: [INPUTS[1] as string, broken],
      out: join(dir, 'out/train.jsonl'),
      format: 'converse',
    });

    // Assess
    await expect(run).rejects.toThrow(InputError);
    expect(readdirSync(join(dir, 'out'))).toEqual([]);
  });

  it('throws a ConfigError when an output would overwrite an input', async () => {
    // Prepare
    const path = jsonlFile('train.jsonl', distinct(3));

    // Act
    const run = reverseData({ inputs: [path], out: path, format: 'converse' });

    // Assess
    await expect(run).rejects.toThrow(ConfigError);
  });

  it('throws a ConfigError on options out of range', async () => {
    // Act
    const run = reverseData({
      inputs: INPUTS,
      out: join(tempDir(), 't.jsonl'),
      format: 'converse',
      minChars: 50,
      maxChars: 20,
    });

    // Assess
    await expect(run).rejects.toThrow(ConfigError);
  });
});

describe('reversePathsOf', () => {
  it.each([
    ['out/train.jsonl', 'out/train'],
    ['out/train', 'out/train'],
    ['out.v2/train.data.jsonl', 'out.v2/train.data'],
  ])('puts the files of %s next to it as %s.*', (out, stem) => {
    // Act
    const paths = reversePathsOf(out);

    // Assess
    expect(paths).toEqual({
      train: out,
      heldout: `${stem}.heldout.jsonl`,
      rejects: `${stem}.rejects.jsonl`,
      manifest: `${stem}.manifest.json`,
    });
  });
});

describe('safer-instruct reverse-data', () => {
  const cli = (...args: string[]) => captured(reverseDataCommand, args);

  it('writes the files and prints a summary with the rejects by reason', async () => {
    // Prepare
    const out = join(tempDir(), 'train.jsonl');

    // Act
    const {
      code,
      out: stdout,
      err,
    } = await cli(...INPUTS, '--out', out, '--format', 'converse', '--heldout', '25%');

    // Assess
    expect({ code, err }).toEqual({ code: 0, err: '' });
    expect(stdout).toContain('reverse-data: 5 files, 26 records, 20 examples');
    expect(stdout).toMatch(/train +10 {2}.*train\.jsonl \(converse\)/);
    expect(stdout).toMatch(/held out +5 {2}.*train\.heldout\.jsonl/);
    expect(stdout).toMatch(/malformed-json +2/);
    expect(stdout).not.toContain('too-long');
    expect(readFileSync(out, 'utf8')).toBe(readFileSync(join(GOLDEN, 'converse.jsonl'), 'utf8'));
  });

  it('picks the format Bedrock wants for --base-model', async () => {
    // Prepare
    const out = join(tempDir(), 'train.jsonl');

    // Act
    const { code, out: stdout } = await cli(
      INPUTS[2] as string,
      '--out',
      out,
      '--base-model',
      'amazon.nova-micro-v1:0:128k',
    );

    // Assess
    expect(code).toBe(0);
    expect(stdout).toContain('(nova)');
    expect(readJsonlFile(out)[0]).toHaveProperty('schemaVersion', 'bedrock-conversation-2024');
  });

  it.each([
    [['--out', 'x.jsonl', '--format', 'converse'], 'at least one dataset file'],
    [['in.jsonl', '--format', 'converse'], '--out is required'],
    [['in.jsonl', '--out', 'x.jsonl'], '--format or --base-model is required'],
    [['in.jsonl', '--out', 'x.jsonl', '--format', 'csv'], '--format takes one of'],
    [
      ['in.jsonl', '--out', 'x.jsonl', '--format', 'nova', '--base-model', 'amazon.nova-micro-v1:0'],
      'not both',
    ],
    [
      ['in.jsonl', '--out', 'x.jsonl', '--base-model', 'mistral.mistral-7b'],
      '--base-model: no fine-tuning format',
    ],
    [['in.jsonl', '--out', 'x.jsonl', '--format', 'nova', '--heldout', 'some'], '--heldout takes a number'],
    [['in.jsonl', '--out', 'x.jsonl', '--format', 'nova', '--heldout', '1'], '--heldout: a fraction below 1'],
    [['in.jsonl', '--out', 'x.jsonl', '--format', 'nova', '--min-chars', '2.5'], '--min-chars:'],
    [['in.jsonl', '--out', 'x.jsonl', '--format', 'nova', '--shape', 'csv'], '--shape takes one of'],
    [['in.jsonl', '--out', 'x.jsonl', '--format', 'nova', '--nope'], 'Unknown option'],
  ])('exits 2 on the usage error in %j', async (args, message) => {
    // Act
    const { code, err } = await cli(...args);

    // Assess
    expect(code).toBe(2);
    expect(err).toContain(message);
    expect(err).toContain('try: safer-instruct reverse-data --help');
  });

  it('exits 1 with one line naming a missing input', async () => {
    // Prepare
    const dir = tempDir();

    // Act
    const { code, err } = await cli(
      join(dir, 'missing.jsonl'),
      '--out',
      join(dir, 't.jsonl'),
      '--format',
      'nova',
    );

    // Assess
    expect(code).toBe(1);
    expect(err).toBe(`safer-instruct: ${join(dir, 'missing.jsonl')}: no such file\n`);
  });

  it('exits 1 when no example is left to train on', async () => {
    // Prepare
    const path = jsonlFile('short.jsonl', [{ instruction: 'Hi', output: 'Hello' }]);

    // Act
    const { code, err } = await cli(path, '--out', join(tempDir(), 't.jsonl'), '--format', 'nova');

    // Assess
    expect(code).toBe(1);
    expect(err).toContain('no example is left to train on');
  });

  it('prints the usage, with the Bedrock models each format fits, on --help', async () => {
    // Act
    const { code, out } = await cli('--help');

    // Assess
    expect(code).toBe(0);
    expect(out).toContain('Usage: safer-instruct reverse-data');
    expect(out).toMatch(/converse +Bedrock: Anthropic Claude 3 Haiku, Meta Llama 3\.2 and 3\.3/);
    expect(out).toMatch(/nova +Bedrock: Amazon Nova/);
  });
});
