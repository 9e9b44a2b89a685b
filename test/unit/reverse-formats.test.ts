import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../lib/pipeline/errors.js';
import { REVERSED_PREAMBLE, reversedPrompt } from '../../lib/pipeline/prompts/induction.js';
import {
  checkRecord,
  formatRecord,
  REVERSE_FORMATS,
  REVERSE_RECORD_SCHEMAS,
  ReverseRecordError,
  tuningFormatOf,
} from '../../lib/reverse/formats.js';

const PAIR = {
  instruction: 'Übersetze: „Guten Morgen“ 👋',
  response: 'Good morning!\nHave a nice day.',
};

describe('formatRecord', () => {
  it.each(REVERSE_FORMATS)('gives %s records that match their own schema', (format) => {
    // Act
    const record = formatRecord(format, PAIR);

    // Assess
    expect(REVERSE_RECORD_SCHEMAS[format].safeParse(record).error).toBeUndefined();
  });

  it('puts the reversed prompt around the response and the instruction as the completion', () => {
    // Act
    const record = formatRecord('prompt-completion', PAIR);

    // Assess
    expect(record).toEqual({ prompt: reversedPrompt(PAIR.response), completion: PAIR.instruction });
  });

  it('writes converse and messages records as one user and one assistant turn, with no system key', () => {
    // Act
    const records = [formatRecord('converse', PAIR), formatRecord('messages', PAIR)];

    // Assess
    for (const record of records)
      expect(record).toEqual({
        messages: [
          { role: 'user', content: reversedPrompt(PAIR.response) },
          { role: 'assistant', content: PAIR.instruction },
        ],
      });
  });

  it('writes nova records in bedrock-conversation-2024 with text content and no system list', () => {
    // Act
    const record = formatRecord('nova', PAIR);

    // Assess
    expect(record).toEqual({
      schemaVersion: 'bedrock-conversation-2024',
      messages: [
        { role: 'user', content: [{ text: reversedPrompt(PAIR.response) }] },
        { role: 'assistant', content: [{ text: PAIR.instruction }] },
      ],
    });
  });

  it('writes alpaca records with the reversed preamble as the instruction and the sides swapped', () => {
    // Act
    const record = formatRecord('alpaca', PAIR);

    // Assess
    expect(record).toEqual({
      instruction: REVERSED_PREAMBLE,
      input: PAIR.response,
      output: PAIR.instruction,
    });
    expect(reversedPrompt(PAIR.response).startsWith(`${record.instruction}\n`)).toBe(true);
  });
});

describe('checkRecord', () => {
  it('throws a ReverseRecordError naming the example when a record breaks its schema', () => {
    // Prepare
    const record = { ...formatRecord('nova', PAIR), system: [] };

    // Act
    const check = () => checkRecord('nova', record, 'alpaca.json:3');

    // Assess
    expect(check).toThrow(ReverseRecordError);
    expect(check).toThrow(/nova record of alpaca\.json:3/);
  });

  it('rejects an empty side', () => {
    // Act
    const check = () => checkRecord('prompt-completion', { prompt: 'p', completion: '' }, 'x');

    // Assess
    expect(check).toThrow(ReverseRecordError);
  });
});

describe('tuningFormatOf', () => {
  it.each([
    ['amazon.titan-text-express-v1:0:8k', 'prompt-completion'],
    ['amazon.titan-text-lite-v1:0:4k', 'prompt-completion'],
    ['cohere.command-light-text-v14:7:4k', 'prompt-completion'],
    ['meta.llama3-1-8b-instruct-v1:0:128k', 'prompt-completion'],
    ['anthropic.claude-3-haiku-20240307-v1:0:200k', 'converse'],
    ['meta.llama3-2-1b-instruct-v1:0:128k', 'converse'],
    ['meta.llama3-3-70b-instruct-v1:0:128k', 'converse'],
    ['amazon.nova-micro-v1:0:128k', 'nova'],
    ['arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0:300k', 'nova'],
    ['bedrock:amazon.nova-pro-v1:0:300k', 'nova'],
  ])('gives %s the %s format', (id, format) => {
    // Act
    const found = tuningFormatOf(id);

    // Assess
    expect(found).toBe(format);
  });

  it.each([
    'mistral.mistral-7b-instruct-v0:2',
    'amazon.titan-image-generator-v2:0',
    'cohere.embed-english-v3',
    'anthropic.claude-3-5-sonnet-20240620-v1:0',
  ])('throws a ConfigError naming %s, which it has no format for', (id) => {
    // Act
    const find = () => tuningFormatOf(id);

    // Assess
    expect(find).toThrow(ConfigError);
    expect(find).toThrow(`"${id}"`);
  });
});
