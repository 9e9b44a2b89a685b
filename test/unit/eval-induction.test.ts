import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { evalInductionCommand } from '../../lib/cli/eval-induction-command.js';
import { type PipelineConfigInput, parseConfig } from '../../lib/pipeline/config.js';
import { InputError, ModelRefusedError, ModelThrottledError } from '../../lib/pipeline/errors.js';
import { CallCache } from '../../lib/pipeline/models/call-cache.js';
import { GovernorPool } from '../../lib/pipeline/models/governor-pool.js';
import type { GenerateRequest } from '../../lib/pipeline/models/model-client.js';
import { DEFAULT_INDUCTION_EXAMPLES, reversedPrompt } from '../../lib/pipeline/prompts/induction.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import {
  type EvaluateInductionDeps,
  evaluateInduction,
  exactMatch,
  type HeldOutExample,
  InductionEval,
  readHeldOut,
  rougeL,
} from '../../lib/reverse/eval-induction.js';
import { captured } from '../support/cli.js';
import { FakeModel, fakeRegistry } from '../support/fake-model.js';
import { tempDir } from '../support/temp.js';

const repo = new URL('../..', import.meta.url).pathname;
const HELDOUT = join(repo, 'test/fixtures/reverse/heldout-eval.jsonl');
const INDUCER = 'bedrock:fake-inducer';
const JUDGE = 'bedrock:fake-judge';

/** What the fake induction model answers for each held-out response, as a model might word it. */
const INDUCED: Record<string, string> = {
  // sea: reference "Write a poem about the ocean."
  'Waves roll in beneath a silver moon,\nand gulls call out a salty tune.':
    'Write a short poem about the sea',
  // boil: the reference itself, in quotes, which the induce stage's cleanup strips.
  'At sea level, water boils at 100 degrees Celsius (212 degrees Fahrenheit).':
    '"What is the boiling point of water at sea level?"',
  // sleep: reference "Give me three tips for sleeping better."; the label is stripped by the cleanup.
  '1. Go to bed at the same time every night. 2. Avoid screens for an hour before bed. 3. Keep your bedroom cool and dark.':
    'Instruction: List some tips for better sleep',
  // line-4 (Alpaca row): reference "Translate to French.\n\nGood morning"
  'Bonjour !': 'How do you say good morning in French?',
  // color: reference "Name a primary color."
  'Red, like a ripe strawberry.': 'What is your favorite color?',
};

/** The fake judge's verdict per induced instruction; `undefined` answers off-schema, every time. */
const VERDICTS: Record<string, boolean | undefined> = {
  'Write a short poem about the sea': true,
  'List some tips for better sleep': true,
  'How do you say good morning in French?': undefined,
  'What is your favorite color?': false,
};

/** The held-out response a request carries; the fixture's responses appear in no template. */
const responseIn = (request: GenerateRequest): string => {
  const found = Object.keys(INDUCED).find((response) => request.prompt.includes(response));
  if (found === undefined) throw new Error(`no held-out response in the prompt: ${request.prompt}`);
  return found;
};

const fakeInducer = (overrides: { generate?: (req: GenerateRequest) => string } = {}) =>
  new FakeModel(INDUCER, { generate: (req) => INDUCED[responseIn(req)] as string, ...overrides });

const fakeJudge = () =>
  new FakeModel(JUDGE, {
    judge: (req) => {
      const induced = /<instruction_b>([\s\S]*?)<\/instruction_b>/.exec(req.prompt)?.[1] ?? '';
      const verdict = VERDICTS[induced];
      return verdict === undefined
        ? { verdict: 'same' }
        : { rationale: `Judged ${verdict ? 'the same' : 'different'}.`, equivalent: verdict };
    },
  });

/** Usage the fake reports: a token per four characters, rounded up, of the prompt and of the answer. */
const inputTokensOf = (model: FakeModel) =>
  model.calls.reduce((sum, c) => sum + Math.ceil((c.request.system.length + c.request.prompt.length) / 4), 0);

const config = (raw: PipelineConfigInput = {}) => parseConfig(raw);

const withFakes = (
  inducer: FakeModel,
  judge = fakeJudge(),
  extra: Partial<EvaluateInductionDeps> = {},
): EvaluateInductionDeps => ({ models: fakeRegistry({ [INDUCER]: inducer, [JUDGE]: judge }), ...extra });

/** The held-out file's examples. */
async function examplesOf(path: string, limit?: number): Promise<HeldOutExample[]> {
  const examples: HeldOutExample[] = [];
  for await (const example of readHeldOut(path, { maxLineBytes: 4096, limit })) examples.push(example);
  return examples;
}

/** A JSONL file of the given lines in a fresh directory. */
function jsonlFile(lines: readonly string[]): string {
  const path = join(tempDir(), 'heldout.jsonl');
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

describe('rougeL', () => {
  it('scores the longest common token subsequence as precision, recall and F1', () => {
    // Prepare: a paraphrase that shares an in-order run of words with the reference.
    const prediction = 'write a short poem about the sea';
    const reference = 'write a poem about the ocean';

    // Act
    const score = rougeL(prediction, reference);

    // Assess: tokens 7 vs 6; LCS "write a poem about the" = 5.
    expect(score.precision).toBeCloseTo(5 / 7, 12); // 5/7 ≈ 0.7143
    expect(score.recall).toBeCloseTo(5 / 6, 12); // 5/6 ≈ 0.8333
    expect(score.f1).toBeCloseTo(10 / 13, 12); // 2·(5/7)(5/6)/((5/7)+(5/6)) = (25/21)/(65/42) = 10/13 ≈ 0.7692
  });

  it('lowercases and splits on every character outside a-z and 0-9, as rouge-score does', () => {
    // Prepare: an apostrophe and an accented letter are separators, digits are tokens.
    const prediction = "Don't order a Café au lait 2 go!";
    const reference = 'do not order a cafe au lait to go';

    // Act
    const score = rougeL(prediction, reference);

    // Assess: prediction -> don t order a caf au lait 2 go (9 tokens);
    // reference -> do not order a cafe au lait to go (9 tokens); LCS "order a au lait go" = 5.
    expect(score.precision).toBeCloseTo(5 / 9, 12); // 5/9 ≈ 0.5556
    expect(score.recall).toBeCloseTo(5 / 9, 12); // 5/9
    expect(score.f1).toBeCloseTo(5 / 9, 12); // P = R, so F1 = 2·P·P/(2P) = P = 5/9
  });

  it('counts words in order, not as a bag of words', () => {
    // Prepare: the same four words in another order.
    const prediction = 'the cat the dog';
    const reference = 'the dog the cat';

    // Act
    const score = rougeL(prediction, reference);

    // Assess: unigram overlap would be 4/4, but the longest in-order run is 2 ("the cat", "the dog" or
    // "the the"): no third token follows in both.
    expect(score.precision).toBeCloseTo(2 / 4, 12); // 2/4 = 0.5
    expect(score.recall).toBeCloseTo(2 / 4, 12); // 2/4 = 0.5
    expect(score.f1).toBeCloseTo(1 / 2, 12); // 2·(1/2)(1/2)/(1/2 + 1/2) = 1/2
  });

  it('scores 0 when either side has no tokens', () => {
    // Prepare
    const punctuationOnly = '?!...';

    // Act
    const empty = rougeL('', 'write a poem');
    const noTokens = rougeL(punctuationOnly, 'write a poem');
    const noReference = rougeL('write a poem', punctuationOnly);

    // Assess
    for (const score of [empty, noTokens, noReference])
      expect(score).toEqual({ precision: 0, recall: 0, f1: 0 });
  });
});

describe('exactMatch', () => {
  it('ignores case, runs of whitespace, surrounding quotes and trailing . ! ?', () => {
    // Prepare / Act / Assess
    expect(exactMatch('  "Write a  poem about\nthe SEA!"  ', 'write a poem about the sea')).toBe(true);
    expect(exactMatch('“What is the capital of France”?', 'What is the capital of France?')).toBe(true);
    expect(exactMatch("'Summarize this.'", 'Summarize this')).toBe(true);
  });

  it('tells apart instructions that differ in a word or in inner punctuation', () => {
    // Prepare / Act / Assess
    expect(exactMatch('Write a poem.', 'Write a poem about the sea.')).toBe(false);
    expect(exactMatch("What's 2+2?", 'whats 2 2')).toBe(false);
  });

  it('never matches an empty prediction', () => {
    // Prepare / Act / Assess
    expect(exactMatch('', '')).toBe(false);
    expect(exactMatch('"?"', 'Why?')).toBe(false);
  });
});

describe('readHeldOut', () => {
  it('reads instruction/response rows and Alpaca rows, joining a non-empty input to the instruction', async () => {
    // Prepare
    const path = jsonlFile([
      JSON.stringify({ instruction: 'Add the numbers.', input: '2 and 3', output: '5' }),
      JSON.stringify({ id: 7, instruction: ' Say hi. ', input: '', output: 'Hi!' }),
      JSON.stringify({ id: 'r', instruction: 'Name a fruit.', response: 'Apple.', extra: 1 }),
    ]);

    // Act
    const examples = await examplesOf(path);

    // Assess
    expect(examples).toEqual([
      { id: 'line-1', instruction: 'Add the numbers.\n\n2 and 3', response: '5' },
      { id: '7', instruction: 'Say hi.', response: 'Hi!' },
      { id: 'r', instruction: 'Name a fruit.', response: 'Apple.' },
    ]);
  });

  it('takes the first n examples in file order and reads no further', async () => {
    // Prepare: a malformed line after the limit is never reached.
    const path = jsonlFile([
      JSON.stringify({ instruction: 'One.', response: 'First.' }),
      JSON.stringify({ instruction: 'Two.', response: 'Second.' }),
      '{not json',
    ]);

    // Act
    const examples = await examplesOf(path, 2);

    // Assess
    expect(examples.map((e) => e.instruction)).toEqual(['One.', 'Two.']);
  });

  it('names the file and line of a malformed row', async () => {
    // Prepare
    const missingSide = jsonlFile([
      JSON.stringify({ instruction: 'Hi.', response: 'Hello.' }),
      '{"instruction":"x"}',
    ]);
    const badJson = jsonlFile([JSON.stringify({ instruction: 'Hi.', response: 'Hello.' }), '', '{not json']);
    const blank = jsonlFile([JSON.stringify({ instruction: '  ', response: 'Hello.' })]);

    // Act / Assess
    await expect(examplesOf(missingSide)).rejects.toThrow(
      new InputError(
        `${missingSide}: line 2: expected {instruction, response} or {instruction, input?, output} strings`,
      ),
    );
    await expect(examplesOf(badJson)).rejects.toThrow(new RegExp(`^${badJson}: line 3: invalid-json`));
    await expect(examplesOf(blank)).rejects.toThrow(`${blank}: line 1: the instruction is blank`);
  });

  it('reports a missing or empty file as an InputError', async () => {
    // Prepare
    const missing = join(tempDir(), 'nope.jsonl');
    const empty = jsonlFile(['']);

    // Act / Assess
    await expect(examplesOf(missing)).rejects.toThrow(new InputError(`${missing}: no such file`));
    await expect(examplesOf(empty)).rejects.toThrow(new InputError(`${empty}: no examples`));
  });
});

describe('evaluateInduction', () => {
  it('reports mean ROUGE-L, the exact-match rate and the judged-equivalent rate over the held-out split', async () => {
    // Prepare
    const inducer = fakeInducer();
    const judge = fakeJudge();

    // Act
    const report = await evaluateInduction(
      { heldout: HELDOUT, model: INDUCER, judgeModel: JUDGE, config: config() },
      withFakes(inducer, judge),
    );

    // Assess: per example (prediction tokens vs reference tokens, LCS):
    //   sea    7 vs 6, LCS 5 "write a poem about the"  P 5/7  R 5/6  F1 10/13
    //   boil   exact after cleanup, 10 vs 10, LCS 10    P 1    R 1    F1 1
    //   sleep  6 vs 7, LCS 3 "tips for better"         P 3/6  R 3/7  F1 2·(1/2)(3/7)/(1/2+3/7) = 6/13
    //   line-4 8 vs 5, LCS 2 "good morning"            P 2/8  R 2/5  F1 2·(1/4)(2/5)/(1/4+2/5) = 4/13
    //   color  5 vs 4, LCS 1 "color"                   P 1/5  R 1/4  F1 2·(1/5)(1/4)/(1/5+1/4) = 2/9
    expect(InductionEval.parse(report)).toEqual(report);
    expect(report.rows.map((r) => [r.id, r.prediction])).toEqual([
      ['sea', 'Write a short poem about the sea'],
      ['boil', 'What is the boiling point of water at sea level?'],
      ['sleep', 'List some tips for better sleep'],
      ['line-4', 'How do you say good morning in French?'],
      ['color', 'What is your favorite color?'],
    ]);
    expect(report.examples).toBe(5);
    // (5/7 + 1 + 1/2 + 1/4 + 1/5)/5 = (100 + 140 + 70 + 35 + 28)/140/5 = 373/700 ≈ 0.5329
    expect(report.rougeL.precision).toBeCloseTo(373 / 700, 12);
    // (5/6 + 1 + 3/7 + 2/5 + 1/4)/5 = (350 + 420 + 180 + 168 + 105)/420/5 = 1223/2100 ≈ 0.5824
    expect(report.rougeL.recall).toBeCloseTo(1223 / 2100, 12);
    // (10/13 + 1 + 6/13 + 4/13 + 2/9)/5 = (180 + 117 + 26)/117/5 = 323/585 ≈ 0.5521
    expect(report.rougeL.f1).toBeCloseTo(323 / 585, 12);
    // boil only: 1/5
    expect(report.exactMatch).toBe(1 / 5);
    // sea yes, boil yes (exact, not asked), sleep yes, color no; line-4 answered off-schema twice:
    // a failure, out of the rate: 3/4 = 0.75
    expect(report.equivalence).toMatchObject({ judged: 4, equivalent: 3, failures: 1, rate: 3 / 4 });
    expect(report.rows.map((r) => r.equivalent)).toEqual([true, true, true, undefined, false]);
    // The fake's validation message, on one line.
    expect(report.rows[3]?.judgeError).toMatch(
      /^invalid answer: \[ \{ "expected": "string", .*"path": \[ "rationale" \]/,
    );
    // 5 inductions; the judge is asked for sea, sleep, color once and line-4 twice: 5 calls.
    expect(report.usage.induction).toMatchObject({ calls: 5, cacheHits: 0 });
    expect(report.usage.judge).toMatchObject({ calls: 5, cacheHits: 0 });
    expect(judge.calls.length).toBe(5);
    expect(report.usage.induction.inputTokens).toBe(inputTokensOf(inducer));
    expect(report.usage.judge?.inputTokens).toBe(inputTokensOf(judge));
    expect(report).toMatchObject({ model: INDUCER, prompt: 'few-shot', template: { version: 'induce-v1' } });
  });

  it('prices the induction model and the judge separately', async () => {
    // Prepare: $1 per 1,000 input tokens and $2 per 1,000 output tokens for the inducer; the judge is free.
    const inducer = fakeInducer();
    const priced = config({ prices: { [INDUCER]: { inputPer1k: 1, outputPer1k: 2 } } });

    // Act
    const report = await evaluateInduction(
      { heldout: HELDOUT, model: INDUCER, judgeModel: JUDGE, config: priced },
      withFakes(inducer),
    );

    // Assess
    const { inputTokens, outputTokens, costUsd } = report.usage.induction;
    const outputs = Object.values(INDUCED).reduce((sum, text) => sum + Math.ceil(text.length / 4), 0);
    expect(outputTokens).toBe(outputs);
    expect(costUsd).toBeCloseTo((inputTokens * 1 + outputTokens * 2) / 1000, 12);
    expect(report.usage.judge?.costUsd).toBe(0);
  });

  it('makes no paid call when run again over the same call cache', async () => {
    // Prepare
    const cache = new CallCache(new FsStore(tempDir()), '');
    const first = await evaluateInduction(
      { heldout: HELDOUT, model: INDUCER, judgeModel: JUDGE, config: config() },
      withFakes(fakeInducer(), fakeJudge(), { cache }),
    );
    const inducer = fakeInducer();
    const judge = fakeJudge();

    // Act
    const second = await evaluateInduction(
      { heldout: HELDOUT, model: INDUCER, judgeModel: JUDGE, config: config() },
      withFakes(inducer, judge, { cache }),
    );

    // Assess
    expect(inducer.calls.length + judge.calls.length).toBe(0);
    expect(second.usage.induction).toMatchObject({ calls: 0, cacheHits: 5, costUsd: 0 });
    expect(second.usage.judge).toMatchObject({ calls: 0, cacheHits: 5, costUsd: 0 });
    expect(second.rows).toEqual(first.rows);
  });

  it('evaluates only the first n examples with a limit', async () => {
    // Prepare / Act
    const report = await evaluateInduction(
      { heldout: HELDOUT, model: INDUCER, config: config(), limit: 2 },
      withFakes(fakeInducer()),
    );

    // Assess: sea and boil. P (5/7 + 1)/2 = 6/7; F1 (10/13 + 1)/2 = 23/26; exact 1/2.
    expect(report.rows.map((r) => r.id)).toEqual(['sea', 'boil']);
    expect(report.rougeL.precision).toBeCloseTo(6 / 7, 12);
    expect(report.rougeL.f1).toBeCloseTo(23 / 26, 12);
    expect(report.exactMatch).toBe(1 / 2);
    expect(report.equivalence).toBeUndefined();
    expect(report.usage.judge).toBeUndefined();
  });

  it('scores a refused induction 0, counts it, and judges it not equivalent without asking', async () => {
    // Prepare
    const inducer = fakeInducer({
      generate: (req) => {
        const response = responseIn(req);
        if (response.startsWith('Red'))
          throw new ModelRefusedError('blocked by a content filter', { inputTokens: 40, outputTokens: 0 });
        return INDUCED[response] as string;
      },
    });
    const judge = fakeJudge();

    // Act
    const report = await evaluateInduction(
      { heldout: HELDOUT, model: INDUCER, judgeModel: JUDGE, config: config() },
      withFakes(inducer, judge),
    );

    // Assess: color now scores 0; F1 (10/13 + 1 + 6/13 + 4/13 + 0)/5 = (20/13 + 1)/5 = 33/65 ≈ 0.5077.
    const color = report.rows.find((r) => r.id === 'color');
    expect(color).toMatchObject({ prediction: '', exact: false, equivalent: false });
    expect(color?.inductionError).toMatch(/^refused: blocked/);
    expect(report.inductionFailures).toBe(1);
    expect(report.rougeL.f1).toBeCloseTo(33 / 65, 12);
    expect(report.usage.induction.calls).toBe(5);
    expect(judge.calls.length).toBe(4);
  });

  it('retries a throttled call through the rate governor', async () => {
    // Prepare: the first call is throttled; the governor's clock does not really wait.
    let throttled = false;
    const inducer = fakeInducer({
      generate: (req) => {
        if (!throttled) {
          throttled = true;
          throw new ModelThrottledError('slow down');
        }
        return INDUCED[responseIn(req)] as string;
      },
    });
    const governors = new GovernorPool({
      sharedByShards: true,
      clock: { now: () => 0, sleep: async () => {}, random: () => 0 },
    });

    // Act
    const report = await evaluateInduction(
      { heldout: HELDOUT, model: INDUCER, config: config() },
      withFakes(inducer, fakeJudge(), { governors }),
    );

    // Assess
    expect(report.usage.induction).toMatchObject({ calls: 5, retries: 1, throttled: 1 });
    expect(report.inductionFailures).toBe(0);
    expect(report.rougeL.f1).toBeCloseTo((10 / 13 + 1 + 6 / 13 + 4 / 13 + 2 / 9) / 5, 12);
  });

  it('prompts a custom Bedrock model as tuned when the prompt is auto', async () => {
    // Prepare
    const spec = 'bedrock-custom:arn:aws:bedrock:us-east-1:123456789012:imported-model/abc#llama';
    const inducer = new FakeModel(spec, { generate: (req) => INDUCED[responseIn(req)] as string });

    // Act
    const report = await evaluateInduction(
      { heldout: HELDOUT, model: spec, config: config(), limit: 1 },
      { models: fakeRegistry(inducer) },
    );

    // Assess
    expect(report).toMatchObject({ prompt: 'tuned', template: { version: 'reversed-v1' } });
    expect(inducer.calls[0]?.request.system).toBe('');
  });
});

describe('safer-instruct eval-induction', () => {
  const cli = (args: string[], inducer = fakeInducer(), judge = fakeJudge()) =>
    captured(
      (a, io) =>
        evalInductionCommand(a, io, { models: fakeRegistry({ [INDUCER]: inducer, [JUDGE]: judge }) }),
      args,
    );

  it('prints the figures, the calls and the first rows of reference and prediction', async () => {
    // Prepare
    const args = [HELDOUT, '--model', INDUCER, '--judge-model', JUDGE, '--no-cache', '--examples', '2'];

    // Act
    const { code, out, err } = await cli(args);

    // Assess: the figures of the hand-computed report above, to four places.
    expect(err).toBe('');
    expect(code).toBe(0);
    expect(out).toMatch(/ROUGE-L precision +0\.5329/); // 373/700
    expect(out).toMatch(/ROUGE-L recall +0\.5824/); // 1223/2100
    expect(out).toMatch(/ROUGE-L F1 +0\.5521/); // 323/585
    expect(out).toMatch(/exact match +20\.0% +1\/5/);
    expect(out).toMatch(/judged equivalent +75\.0% +3\/4/);
    expect(out).toMatch(/1 not judged/);
    expect(out).toMatch(/induction +5 +0 +0 /);
    expect(out).toMatch(/judge +5 +0 +0 /);
    expect(out).toContain('first 2 of 5 examples:');
    expect(out).toContain('sea: ROUGE-L F1 0.7692, equivalent');
    expect(out).toContain('  prediction: "Write a short poem about the sea"');
    expect(out).toContain('boil: ROUGE-L F1 1.0000, exact, equivalent');
    expect(out).not.toContain('sleep:');
  });

  it('prints the report as JSON, writes it to --out, and pays nothing when run again over the cache', async () => {
    // Prepare
    const dir = tempDir();
    const outFile = join(dir, 'reports', 'eval.json');
    const args = [HELDOUT, '--model', INDUCER, '--json', '--cache-dir', join(dir, 'calls'), '--out', outFile];
    const first = await cli(args);
    const inducer = fakeInducer();

    // Act
    const second = await cli(args, inducer);

    // Assess
    expect(first.code).toBe(0);
    const report = InductionEval.parse(JSON.parse(first.out));
    expect(report.rougeL.f1).toBeCloseTo(323 / 585, 12);
    expect(report.usage.induction.calls).toBe(5);
    expect(JSON.parse(readFileSync(outFile, 'utf8'))).toEqual(JSON.parse(second.out));
    expect(second.code).toBe(0);
    expect(inducer.calls.length).toBe(0);
    expect(InductionEval.parse(JSON.parse(second.out)).usage.induction).toMatchObject({
      calls: 0,
      cacheHits: 5,
    });
  });

  it('sends the reversed training prompt, with no system prompt, with --prompt tuned', async () => {
    // Prepare
    const inducer = fakeInducer();
    const responses = Object.keys(INDUCED);

    // Act
    const { code } = await cli([HELDOUT, '--model', INDUCER, '--prompt', 'tuned', '--no-cache'], inducer);

    // Assess
    expect(code).toBe(0);
    expect(inducer.calls.map((c) => c.request.system)).toEqual(['', '', '', '', '']);
    expect(inducer.calls.map((c) => c.request.prompt).sort()).toEqual(responses.map(reversedPrompt).sort());
  });

  it('sends the configured reversed examples and a system prompt with --prompt few-shot', async () => {
    // Prepare
    const dir = tempDir();
    const configFile = join(dir, 'config.json');
    const example = {
      response: 'The meeting moved to Thursday at 3 pm.',
      instruction: 'When is the meeting now?',
    };
    writeFileSync(
      configFile,
      JSON.stringify({ stages: { induce: { prompt: 'tuned', examples: [example] } } }),
    );
    const inducer = fakeInducer();

    // Act
    const { code, out } = await cli(
      [HELDOUT, '--model', INDUCER, '--config', configFile, '--prompt', 'few-shot', '--no-cache', '--json'],
      inducer,
    );

    // Assess: the flag wins over the file's prompt; the file's examples replace the built-in ones.
    expect(code).toBe(0);
    expect(JSON.parse(out)).toMatchObject({ prompt: 'few-shot', template: { version: 'induce-few-shot' } });
    expect(inducer.calls).toHaveLength(5);
    for (const { request } of inducer.calls) {
      expect(request.system).not.toBe('');
      expect(request.prompt).toContain(
        `<response>${example.response}</response>\n### Instruction:\n${example.instruction}`,
      );
      expect(request.prompt).not.toContain(DEFAULT_INDUCTION_EXAMPLES[0]?.instruction);
    }
  });

  it('exits 2 on a usage error', async () => {
    // Prepare / Act
    const noModel = await cli([HELDOUT]);
    const badPrompt = await cli([HELDOUT, '--model', INDUCER, '--prompt', 'zero-shot']);
    const badLimit = await cli([HELDOUT, '--model', INDUCER, '--limit', '0']);

    // Assess
    expect(noModel).toMatchObject({ code: 2, out: '' });
    expect(noModel.err).toBe(
      'safer-instruct: --model <spec> is required\ntry: safer-instruct eval-induction --help\n',
    );
    expect(badPrompt.code).toBe(2);
    expect(badPrompt.err).toMatch(/--prompt takes one of auto, tuned, few-shot, not "zero-shot"/);
    expect(badLimit.code).toBe(2);
  });

  it('exits 1 naming the file and line of a malformed held-out row, before any call', async () => {
    // Prepare
    const path = jsonlFile([
      JSON.stringify({ instruction: 'Hi.', response: 'Hello.' }),
      '{"text":"no sides"}',
    ]);
    const inducer = fakeInducer();

    // Act
    const { code, err } = await cli([path, '--model', INDUCER, '--no-cache'], inducer);

    // Assess
    expect(code).toBe(1);
    expect(err).toBe(
      `safer-instruct: ${path}: line 2: expected {instruction, response} or {instruction, input?, output} strings\n`,
    );
    expect(inducer.calls).toHaveLength(0);
  });
});
