import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configFrom } from '../../lib/cli/main.js';
import { drawFewShotExamples } from '../../lib/reverse/few-shot.js';
import { REVERSE_FORMATS, unreverseRecord } from '../../lib/reverse/formats.js';
import { tempDir } from '../support/temp.js';

const golden = (file: string) => new URL(`../fixtures/reverse/golden/${file}`, import.meta.url).pathname;
const heldoutPairs = () =>
  readFileSync(golden('heldout.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const { instruction, response } = JSON.parse(line) as { instruction: string; response: string };
      return { response, instruction };
    });

describe('few-shot examples for induction', () => {
  it.each(REVERSE_FORMATS)('reads back the pairs reverse-data wrote in the %s format', async (format) => {
    // Prepare
    const lines = readFileSync(golden(`${format}.jsonl`), 'utf8')
      .split('\n')
      .filter(Boolean);

    // Act
    const pairs = lines.map((line) => unreverseRecord(JSON.parse(line)));
    const drawn = await drawFewShotExamples(golden(`${format}.jsonl`), 2);

    // Assess
    expect(pairs.every((p) => p !== undefined && p.response.length > 0 && p.instruction.length > 0)).toBe(
      true,
    );
    expect(drawn).toHaveLength(2);
    for (const example of drawn) expect(pairs).toContainEqual(example);
  });

  it('draws the same examples whatever the order of the file', async () => {
    // Prepare
    const dir = tempDir();
    const lines = readFileSync(golden('prompt-completion.jsonl'), 'utf8').split('\n').filter(Boolean);
    writeFileSync(join(dir, 'forward.jsonl'), `${lines.join('\n')}\n`);
    writeFileSync(join(dir, 'backward.jsonl'), `${[...lines].reverse().join('\n')}\n`);

    // Act
    const forward = await drawFewShotExamples(join(dir, 'forward.jsonl'), 3);
    const backward = await drawFewShotExamples(join(dir, 'backward.jsonl'), 3);

    // Assess
    expect(backward).toEqual(forward);
  });

  it('reads any instruction dataset too, named .json or not', async () => {
    // Prepare
    const dolly = new URL('../fixtures/reverse/dolly.jsonl', import.meta.url).pathname;
    const asJson = join(tempDir(), 'reversed.json');
    writeFileSync(asJson, readFileSync(golden('alpaca.jsonl')));

    // Act
    const drawn = await drawFewShotExamples(dolly, 16);
    const fromJsonName = await drawFewShotExamples(asJson, 16);

    // Assess
    expect(drawn.length).toBeGreaterThan(0);
    for (const example of drawn) expect(example.response).not.toContain('### Response:');
    expect(fromJsonName).toEqual(await drawFewShotExamples(golden('alpaca.jsonl'), 16));
    for (const example of fromJsonName) expect(heldoutPairs()).not.toContainEqual(example);
  });

  it('puts the drawn examples into the run configuration for --few-shot', async () => {
    // Act
    const config = await configFrom({ model: 'bedrock:m', 'few-shot': golden('nova.jsonl'), shots: '2' });

    // Assess
    expect(config.stages.induce.examples).toHaveLength(2);
    expect(config.stages.induce.examples).toEqual(await drawFewShotExamples(golden('nova.jsonl'), 2));
  });

  it('says so when no example is fit to show', async () => {
    // Prepare
    const file = join(tempDir(), 'tiny.jsonl');
    writeFileSync(file, '{"instruction": "Hi there you", "response": "Hello."}\n');

    // Act
    const act = drawFewShotExamples(file, 2);

    // Assess
    await expect(act).rejects.toMatchObject({
      name: 'InputError',
      message: expect.stringContaining('tiny.jsonl'),
    });
  });
});
