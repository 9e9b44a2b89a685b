import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../lib/pipeline/errors.js';
import {
  detectShape,
  type InstructionItem,
  type ReadInstructionsOptions,
  readInstructions,
} from '../../lib/reverse/read-instructions.js';
import { tempDir } from '../support/temp.js';

const FIXTURES = new URL('../fixtures/reverse/', import.meta.url).pathname;

const read = async (path: string, options?: ReadInstructionsOptions): Promise<InstructionItem[]> => {
  const items: InstructionItem[] = [];
  for await (const item of readInstructions(path, options)) items.push(item);
  return items;
};

/** A file of the given text in a fresh temporary directory. */
function fileOf(name: string, text: string): string {
  const path = join(tempDir(), name);
  writeFileSync(path, text);
  return path;
}

const jsonl = (...records: unknown[]) => `${records.map((r) => JSON.stringify(r)).join('\n')}\n`;

describe('readInstructions on Alpaca and Dolly records', () => {
  it('joins a non-empty input to the instruction after a blank line', async () => {
    // Prepare
    const path = join(FIXTURES, 'alpaca.json');

    // Act
    const items = await read(path);

    // Assess
    expect(items[0]).toEqual({
      id: 'alpaca.json:1',
      source: path,
      line: 1,
      instruction: 'Give three tips for staying healthy.',
      response: 'Eat a balanced diet, exercise regularly and get enough sleep.',
    });
    expect(items[1]).toMatchObject({
      instruction: 'Translate the sentence into French.\n\nThe cat sleeps on the warm windowsill.',
    });
  });

  it('takes the id field of a record when it is a string or a number', async () => {
    // Prepare
    const path = fileOf(
      'ids.jsonl',
      jsonl(
        { id: 'a-1', instruction: 'Say something kind.', response: 'You are doing great.' },
        { id: 7, instruction: 'Say something kind.', response: 'You are doing great.' },
        { id: { nested: true }, instruction: 'Say something kind.', response: 'You are doing great.' },
      ),
    );

    // Act
    const ids = (await read(path)).map((item) => item.id);

    // Assess
    expect(ids).toEqual(['a-1', '7', 'ids.jsonl:3']);
  });

  it('joins a Dolly context like an Alpaca input and reads a null context as none', async () => {
    // Act
    const items = await read(join(FIXTURES, 'dolly.jsonl'));

    // Assess
    expect(items[1]).toMatchObject({
      instruction:
        'How tall is the tower according to the text?\n\n' +
        'The old clock tower in the town square is 42 metres tall and was built in 1890.',
    });
    expect(items[3]).toMatchObject({ instruction: 'Suggest a name for a pet goldfish.' });
  });

  it('reads a held-out file of {id, instruction, response} back as Dolly records with their ids', async () => {
    // Prepare
    const path = fileOf(
      'train.heldout.jsonl',
      jsonl({ id: 'conv-1:2', instruction: 'Which river runs through Rome?', response: 'The Tiber.' }),
    );

    // Act
    const items = await read(path, { shape: 'dolly' });

    // Assess
    expect(items).toEqual([
      {
        id: 'conv-1:2',
        source: path,
        line: 1,
        instruction: 'Which river runs through Rome?',
        response: 'The Tiber.',
      },
    ]);
  });

  it('reports a field that is not text as non-text', async () => {
    // Act
    const items = await read(join(FIXTURES, 'alpaca.json'));

    // Assess
    expect(items[5]).toEqual({
      source: join(FIXTURES, 'alpaca.json'),
      line: 6,
      id: 'alpaca.json:6',
      reason: 'non-text',
      detail: '"output" is a number, not text',
    });
  });
});

describe('readInstructions on conversations', () => {
  it('gives one example per user->assistant turn, without the earlier turns', async () => {
    // Act
    const items = await read(join(FIXTURES, 'sharegpt.json'));

    // Assess
    expect(items.slice(0, 2)).toEqual([
      {
        id: 'conv-1:1',
        source: join(FIXTURES, 'sharegpt.json'),
        line: 1,
        turn: 1,
        instruction: 'What is the capital of Italy?',
        response: 'The capital of Italy is Rome.',
      },
      {
        id: 'conv-1:2',
        source: join(FIXTURES, 'sharegpt.json'),
        line: 1,
        turn: 2,
        instruction: 'Which river runs through it?',
        response: 'The Tiber river runs through Rome.',
      },
    ]);
  });

  it('reports a conversation with no user->assistant turn as empty', async () => {
    // Act
    const items = await read(join(FIXTURES, 'sharegpt.json'));

    // Assess
    expect(items[2]).toMatchObject({ line: 2, reason: 'empty', id: 'sharegpt.json:2' });
    expect(items[2]).not.toHaveProperty('turn');
  });

  it('accepts the user and chatgpt speaker names of ShareGPT', async () => {
    // Act
    const items = await read(join(FIXTURES, 'sharegpt.json'));

    // Assess
    expect(items[4]).toMatchObject({
      id: 'sharegpt.json:4:1',
      instruction: 'Write a short greeting for a birthday card.',
    });
  });

  it('joins the text parts of OpenAI content with line breaks', async () => {
    // Act
    const items = await read(join(FIXTURES, 'openai.jsonl'));

    // Assess
    const joined = items.find((item) => item.line === 3);
    expect(joined).toMatchObject({
      instruction: 'Write a sentence that uses the word "bright".\nKeep it short.',
      response: 'The bright sun rose over the quiet hills.',
    });
  });

  it('marks a turn with an image part, or an assistant turn with only tool calls, as non-text', async () => {
    // Act
    const items = await read(join(FIXTURES, 'openai.jsonl'));

    // Assess
    const nonText = items.filter((item) => 'reason' in item && item.reason === 'non-text');
    expect(nonText).toEqual([
      expect.objectContaining({
        line: 2,
        turn: 1,
        id: 'openai.jsonl:2:1',
        detail: 'the user content holds a part of type image_url',
      }),
      expect.objectContaining({ line: 4, turn: 1, detail: 'the assistant content is null' }),
    ]);
  });

  it('joins messages in a row from one side, and pairs nothing across a system or tool message', async () => {
    // Prepare
    const path = fileOf(
      'chat.jsonl',
      jsonl({
        messages: [
          { role: 'user', content: 'First part of a question.' },
          { role: 'user', content: 'Second part of it.' },
          { role: 'assistant', content: 'An answer to the second question.' },
          { role: 'assistant', content: 'A second assistant message.' },
          { role: 'tool', content: 'tool output' },
          { role: 'assistant', content: 'An answer after the tool.' },
        ],
      }),
    );

    // Act
    const items = await read(path);

    // Assess
    expect(items).toEqual([
      expect.objectContaining({
        turn: 1,
        instruction: 'First part of a question.\n\nSecond part of it.',
        response: 'An answer to the second question.\n\nA second assistant message.',
      }),
    ]);
  });
});

describe('readInstructions on malformed input', () => {
  it('reports a malformed line at its line and goes on', async () => {
    // Act
    const items = await read(join(FIXTURES, 'alpaca.jsonl'));

    // Assess
    expect(items[2]).toMatchObject({
      line: 3,
      reason: 'malformed-json',
      detail: 'the line is not valid JSON',
    });
    expect(items[2]).not.toHaveProperty('id');
    expect(items.at(-1)).toMatchObject({ line: 7 });
  });

  it('reports a record of no known shape with the fields it has', async () => {
    // Act
    const items = await read(join(FIXTURES, 'alpaca.jsonl'));

    // Assess
    expect(items[3]).toMatchObject({
      line: 4,
      reason: 'unknown-shape',
      detail: 'expected a known shape; the record has question, answer',
    });
  });

  it('reports a record that does not have the forced shape as unknown-shape', async () => {
    // Act
    const items = await read(join(FIXTURES, 'alpaca.json'), { shape: 'dolly' });

    // Assess
    expect(items[0]).toMatchObject({
      reason: 'unknown-shape',
      detail: expect.stringContaining('expected dolly fields instruction, response'),
    });
  });

  it('reports a JSON Lines value that is not an object as unknown-shape', async () => {
    // Prepare
    const path = fileOf('values.jsonl', '["a list"]\n');

    // Act
    const items = await read(path);

    // Assess
    expect(items).toEqual([
      {
        source: path,
        line: 1,
        reason: 'unknown-shape',
        detail: 'a JSON value that is not an object',
      },
    ]);
  });
});

describe('readInstructions on whole files', () => {
  it('reads the one array of a JSON object as its records', async () => {
    // Prepare
    const path = fileOf(
      'wrapped.json',
      JSON.stringify({ version: 2, data: [{ instruction: 'Name a colour.', output: 'Blue is a colour.' }] }),
    );

    // Act
    const items = await read(path);

    // Assess
    expect(items).toEqual([expect.objectContaining({ id: 'wrapped.json:1', instruction: 'Name a colour.' })]);
  });

  it('reads a .json file that holds JSON Lines line by line', async () => {
    // Prepare
    const path = fileOf(
      'lines.json',
      jsonl(
        { instruction: 'Name a colour.', output: 'Blue is a colour.' },
        { instruction: 'Name a shape.', output: 'A circle is a shape.' },
      ),
    );

    // Act
    const items = await read(path);

    // Assess
    expect(items.map((item) => item.line)).toEqual([1, 2]);
  });

  it('splits a JSON array by its brackets, not by brackets or quotes inside strings', async () => {
    // Prepare
    const tricky = { instruction: 'Close it: ]}, then quote: \\" and {[', output: 'Done: "]" and "}".' };
    const path = fileOf('tricky.json', JSON.stringify([tricky, { ...tricky, id: 'second' }]));

    // Act
    const items = await read(path);

    // Assess
    expect(items).toEqual([
      expect.objectContaining({
        id: 'tricky.json:1',
        line: 1,
        instruction: tricky.instruction,
        response: tricky.output,
      }),
      expect.objectContaining({ id: 'second', line: 2, instruction: tricky.instruction }),
    ]);
  });

  it('reports a broken element of a JSON array as malformed-json and goes on', async () => {
    // Prepare
    const path = fileOf(
      'broken.json',
      '[\n  {"instruction": "c" "output": "d"},\n  {"instruction": "Name a colour.", "output": "Blue."}\n]\n',
    );

    // Act
    const items = await read(path);

    // Assess
    expect(items).toEqual([
      { source: path, line: 1, reason: 'malformed-json', detail: 'the record is not valid JSON' },
      expect.objectContaining({ line: 2, instruction: 'Name a colour.' }),
    ]);
  });

  it('reports an element longer than the limit without holding it, and bare values as unknown-shape', async () => {
    // Prepare
    const long = { instruction: 'Repeat the letter a.', output: 'a'.repeat(5000) };
    const path = fileOf('long.json', JSON.stringify([long, 7, 'text', null]));

    // Act
    const items = await read(path, { maxLineBytes: 2048 });

    // Assess
    expect(items.map((item) => ('reason' in item ? [item.line, item.reason] : item.line))).toEqual([
      [1, 'malformed-json'],
      [2, 'unknown-shape'],
      [3, 'unknown-shape'],
      [4, 'unknown-shape'],
    ]);
  });

  it('throws an InputError when a JSON array is cut short', async () => {
    // Prepare
    const path = fileOf('cut.json', '[{"instruction": "Name a colour.", "output": "Blue."}, {"instr');

    // Act
    const reading = read(path);

    // Assess
    await expect(reading).rejects.toThrow(InputError);
    await expect(reading).rejects.toThrow(/cut\.json: the JSON array is not closed after 1 record;/);
  });

  it('throws an InputError naming the file and line of a broken JSON object', async () => {
    // Prepare
    const path = fileOf('broken.json', '{\n  "data": [\n    {"instruction": "c" "output": "d"}\n  ]\n}\n');

    // Act
    const reading = read(path);

    // Assess
    await expect(reading).rejects.toThrow(InputError);
    await expect(reading).rejects.toThrow(/broken\.json: not valid JSON .*line 3/);
  });

  it('throws an InputError naming a missing or empty file', async () => {
    // Prepare
    const missing = join(tempDir(), 'missing.jsonl');
    const empty = fileOf('empty.jsonl', '');

    // Act
    const [a, b] = [read(missing), read(empty)];

    // Assess
    await expect(a).rejects.toThrow(`${missing}: no such file`);
    await expect(b).rejects.toThrow(`${empty}: the file is empty`);
  });
});

describe('detectShape', () => {
  it.each([
    [{ conversations: [] }, 'sharegpt'],
    [{ messages: [] }, 'openai'],
    [{ instruction: 'i', input: '', output: 'o' }, 'alpaca'],
    [{ instruction: 'i', context: '', response: 'r' }, 'dolly'],
    [{ prompt: 'p', completion: 'c' }, undefined],
  ])('detects %j as %s', (record, shape) => {
    // Act
    const detected = detectShape(record);

    // Assess
    expect(detected).toBe(shape);
  });
});
