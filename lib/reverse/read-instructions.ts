import { createReadStream } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { InputError } from '../pipeline/errors.js';
import { readJsonl, sniffInput } from '../pipeline/input.js';

/** The instruction-dataset shapes a record may have. */
export const INSTRUCTION_SHAPES = ['alpaca', 'dolly', 'sharegpt', 'openai'] as const;
export type InstructionShape = (typeof INSTRUCTION_SHAPES)[number];

/** Why a record, or one turn of a conversation, gives no example. */
export const READ_PROBLEMS = ['malformed-json', 'unknown-shape', 'non-text', 'empty'] as const;
export type ReadProblemReason = (typeof READ_PROBLEMS)[number];

/**
 * One (instruction, response) pair as the dataset holds it, texts untouched. `line` is the record's line
 * in a JSON Lines file, or its position from 1 in a JSON array; `turn` counts the user->assistant
 * exchanges of a conversation from 1.
 */
export interface InstructionExample {
  readonly id: string;
  readonly source: string;
  readonly line: number;
  readonly turn?: number;
  readonly instruction: string;
  readonly response: string;
}

/** A record, or one turn of a conversation, that cannot be read as an example, and why. */
export interface ReadProblem {
  readonly source: string;
  readonly line: number;
  readonly turn?: number;
  /** The id the example would have had; absent when the record is not a JSON object. */
  readonly id?: string;
  readonly reason: ReadProblemReason;
  readonly detail: string;
}

/** What {@link readInstructions} yields: an example, or a problem in its place. */
export type InstructionItem = InstructionExample | ReadProblem;

export const isReadProblem = (item: InstructionItem): item is ReadProblem => 'reason' in item;

/** Options of {@link readInstructions}. */
export interface ReadInstructionsOptions {
  /** Read every record as this shape; by default each record's shape is detected from its fields. */
  readonly shape?: InstructionShape;
  /**
   * A longer JSON Lines line is a malformed record, and is not held in memory. A whole conversation is
   * one line, so the default is generous.
   * @default 16 MiB
   */
  readonly maxLineBytes?: number;
}

const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;

/** Throws an InputError naming the path when it is missing, not a file, or empty. */
export async function assertInputFile(path: string): Promise<void> {
  const info = await stat(path).catch((error: NodeJS.ErrnoException) => {
    throw new InputError(
      error.code === 'ENOENT' ? `${path}: no such file` : `${path}: cannot read it (${error.code ?? error})`,
    );
  });
  if (!info.isFile()) throw new InputError(`${path}: not a file`);
  if (info.size === 0) throw new InputError(`${path}: the file is empty`);
}

/**
 * Streams the examples of an instruction dataset: Alpaca (`instruction`, `input`, `output`), Dolly
 * (`instruction`, `context`, `response`), ShareGPT (`conversations` of `{from, value}`) or OpenAI-style
 * (`messages` of `{role, content}`), detected per record unless `shape` is given.
 *
 * A `.json` file holding a JSON array is streamed element by element, one record in memory at a time
 * (ShareGPT dumps are larger than the longest string V8 can hold); a `.json` object holding one array
 * of records is read whole; a `.json` file of JSON Lines is read as such. Any other file is JSON Lines,
 * streamed line by line. A conversation gives one example per user message followed directly by an
 * assistant message.
 *
 * Every record gives at least one item: its examples, or a problem saying why it gives none; nothing
 * is dropped silently. Throws an InputError naming the file when the file as a whole cannot be read.
 */
export async function* readInstructions(
  path: string,
  options: ReadInstructionsOptions = {},
): AsyncGenerator<InstructionItem> {
  await assertInputFile(path);
  const maxLineBytes = options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  await sniffInput(createReadStream(path), path).catch(rethrowUnreadable(path));
  const layout = /\.json$/i.test(path) ? await jsonLayout(path, maxLineBytes) : 'lines';
  try {
    if (layout === 'array') {
      for await (const element of jsonArrayElements(path, maxLineBytes)) {
        const value = parseElement(element);
        if ('problem' in value)
          yield { source: path, line: element.index, reason: 'malformed-json', detail: value.problem };
        else yield* itemsOf(value.record, path, element.index, options.shape);
      }
    } else if (layout === 'object') {
      const records = await objectRecords(path);
      for (const [i, record] of records.entries()) yield* itemsOf(record, path, i + 1, options.shape);
    } else {
      for await (const row of readJsonl(createReadStream(path), { maxLineBytes })) {
        if ('error' in row) yield lineProblem(path, row.line, row.error);
        else yield* itemsOf(row.fields, path, row.line, options.shape);
      }
    }
  } catch (error) {
    rethrowUnreadable(path)(error);
  }
}

/**
 * A JSON Lines line that is not a record. The JSON parser's own message is left out: its wording
 * changes between Node versions, and the rejects of one input should not.
 */
function lineProblem(source: string, line: number, error: { reason: string; detail: string }): ReadProblem {
  if (error.reason === 'not-an-object')
    return { source, line, reason: 'unknown-shape', detail: 'a JSON value that is not an object' };
  const detail =
    error.reason === 'invalid-json' ? 'the line is not valid JSON' : `${error.reason}: ${error.detail}`;
  return { source, line, reason: 'malformed-json', detail };
}

/** File-system errors become an InputError naming the file; anything else is a bug and stays as is. */
const rethrowUnreadable = (path: string) => (error: unknown) => {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (error instanceof InputError || typeof code !== 'string') throw error;
  throw new InputError(`${path}: cannot read it (${code})`, { cause: error });
};

/** How much of a `.json` file is looked at to find its first character. */
const HEAD_BYTES = 64 * 1024;

/**
 * How a `.json` file holds its records: an `array`; JSON Lines (`lines`), a first line that is a whole
 * object with more after it; else one `object`, pretty-printed or not.
 */
async function jsonLayout(path: string, maxLineBytes: number): Promise<'array' | 'lines' | 'object'> {
  const handle = await open(path, 'r').catch(rethrowUnreadable(path));
  let head: string;
  try {
    const buffer = Buffer.alloc(HEAD_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, HEAD_BYTES, 0);
    head = buffer.subarray(0, bytesRead).toString('utf8');
  } finally {
    await handle.close();
  }
  const first = head.replace(/^\uFEFF/, '').trimStart()[0];
  if (first === '[') return 'array';
  if (first !== '{') throw new InputError(`${path}: expected a JSON array or object, not "${first ?? ''}"`);
  let rows = 0;
  for await (const row of readJsonl(createReadStream(path), { maxLineBytes })) {
    if (rows === 0 && 'error' in row) return 'object';
    if (++rows === 2) return 'lines';
  }
  return 'object';
}

/** The text of one element of a JSON array, or only its length when that was over the limit. */
type ArrayElement =
  | { readonly index: number; readonly text: string }
  | { readonly index: number; readonly tooLong: number };

const isSpace = (c: string) => c === ' ' || c === '\n' || c === '\r' || c === '\t';

/**
 * Splits a JSON array into the text of its elements as the file streams, numbered from 1. Holds one
 * element at a time, and at most `maxChars` of it: a longer one is reported with its length. It finds
 * where each element ends by its brackets and strings; whether the element is valid JSON is for
 * JSON.parse to say. Commas between elements are not checked. Throws an InputError when the array is
 * not closed or text follows it.
 */
async function* jsonArrayElements(path: string, maxChars: number): AsyncGenerator<ArrayElement> {
  // Widened so the check after the loop sees the states the loop sets.
  let state = 'before' as 'before' | 'between' | 'element' | 'after';
  let index = 0;
  let depth = 0;
  let container = false;
  let inString = false;
  let escaped = false;
  let parts: string[] = [];
  let size = 0;
  const take = (piece: string) => {
    size += piece.length;
    if (size <= maxChars) parts.push(piece);
    else parts = [];
  };
  const end = (): ArrayElement => {
    index++;
    const element = size > maxChars ? { index, tooLong: size } : { index, text: parts.join('') };
    parts = [];
    size = 0;
    return element;
  };
  for await (const chunk of createReadStream(path, { encoding: 'utf8' }) as AsyncIterable<string>) {
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i] as string;
      if (state === 'element') {
        if (inString) {
          if (escaped) escaped = false;
          else if (c === '\\') escaped = true;
          else if (c === '"') inString = false;
        } else if (c === '"') inString = true;
        else if (container) {
          if (c === '{' || c === '[') depth++;
          else if ((c === '}' || c === ']') && --depth === 0) {
            take(chunk.slice(start, i + 1));
            yield end();
            state = 'between';
          }
        } else if (c === ',' || c === ']') {
          // A bare value (a number, a string, null) ends where the next element or the array begins.
          take(chunk.slice(start, i));
          yield end();
          state = c === ']' ? 'after' : 'between';
        }
        continue;
      }
      if (isSpace(c) || (state === 'before' && c === '\uFEFF')) continue;
      if (state === 'before') {
        if (c !== '[') throw new InputError(`${path}: expected a JSON array`);
        state = 'between';
      } else if (state === 'after') throw new InputError(`${path}: text after the end of the JSON array`);
      else if (c === ']') state = 'after';
      else if (c !== ',') {
        state = 'element';
        start = i;
        container = c === '{' || c === '[';
        depth = container ? 1 : 0;
        inString = c === '"';
        escaped = false;
      }
    }
    if (state === 'element') take(chunk.slice(start));
  }
  if (state !== 'after')
    throw new InputError(
      `${path}: the JSON array is not closed after ${index} ${index === 1 ? 'record' : 'records'}; is the file cut short?`,
    );
}

/** An array element's value, or why it is not one. */
function parseElement(element: ArrayElement): { record: unknown } | { problem: string } {
  if ('tooLong' in element)
    return { problem: `the record is ${element.tooLong} characters long, over the limit` };
  try {
    return { record: JSON.parse(element.text) };
  } catch {
    return { problem: 'the record is not valid JSON' };
  }
}

/**
 * The records of a `.json` file that holds one object: the elements of its one array-valued field, or
 * the object itself when it is a record. Read whole.
 */
async function objectRecords(path: string): Promise<unknown[]> {
  const text = (await readFile(path, 'utf8').catch(rethrowUnreadable(path))).replace(/^\uFEFF/, '');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new InputError(`${path}: not valid JSON (${describeJsonError(error as Error, text)})`);
  }
  if (!isObject(value)) throw new InputError(`${path}: expected a JSON object, not ${kindOf(value)}`);
  if (detectShape(value)) return [value];
  const arrays = Object.entries(value).filter(([, field]) => Array.isArray(field));
  if (arrays.length === 1) return arrays[0]?.[1] as unknown[];
  throw new InputError(
    `${path}: expected a JSON array of records, or an object with one array of records ` +
      `(its fields: ${Object.keys(value).join(', ') || 'none'})`,
  );
}

/** A JSON parse error's message on one line, with the line it points at when it gives a position. */
function describeJsonError(error: Error, text: string): string {
  // Some messages quote the text around the error, line breaks and all.
  const message = error.message.replace(/\r?\n/g, '\\n').slice(0, 300);
  const position = /at position (\d+)/.exec(message)?.[1];
  if (position === undefined || /\(line \d+/.test(message)) return message;
  const line = text.slice(0, Number(position)).split('\n').length;
  return `${message}, line ${line}`;
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === 'object' && !Array.isArray(value);

const kindOf = (value: unknown) =>
  value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;

/** The fields each shape needs, in the order detection tries them. */
const REQUIRED: Record<InstructionShape, readonly string[]> = {
  sharegpt: ['conversations'],
  openai: ['messages'],
  alpaca: ['instruction', 'output'],
  dolly: ['instruction', 'response'],
};
const DETECTION_ORDER: readonly InstructionShape[] = ['sharegpt', 'openai', 'alpaca', 'dolly'];

/** The shape a record's fields say it has, or undefined when they fit none. */
export function detectShape(record: Record<string, unknown>): InstructionShape | undefined {
  return DETECTION_ORDER.find((shape) => REQUIRED[shape].every((field) => field in record));
}

/** Where a record sits and the id its examples take. */
interface RecordAt {
  readonly source: string;
  readonly line: number;
  readonly id: string;
}

/** The record's `id` when it is a string or a number, else `<file name>:<line>`. */
function recordIdOf(record: Record<string, unknown>, source: string, line: number): string {
  const { id } = record;
  if (typeof id === 'string' && id.trim() !== '') return id;
  if (typeof id === 'number' && Number.isFinite(id)) return String(id);
  return `${basename(source)}:${line}`;
}

function itemsOf(
  record: unknown,
  source: string,
  line: number,
  forced: InstructionShape | undefined,
): InstructionItem[] {
  if (!isObject(record))
    return [{ source, line, reason: 'unknown-shape', detail: `${kindOf(record)}, not a JSON object` }];
  const at: RecordAt = { source, line, id: recordIdOf(record, source, line) };
  const shape = forced ?? detectShape(record);
  const fields = Object.keys(record).join(', ') || 'none';
  if (shape === undefined || !REQUIRED[shape].every((field) => field in record)) {
    const wanted = shape ? `${shape} fields ${REQUIRED[shape].join(', ')}` : 'a known shape';
    return [problem(at, 'unknown-shape', `expected ${wanted}; the record has ${fields}`)];
  }
  switch (shape) {
    case 'alpaca':
      return [pairOf(record, at, 'output', 'input')];
    case 'dolly':
      return [pairOf(record, at, 'response', 'context')];
    case 'sharegpt':
      return conversationOf(record.conversations, at, 'conversations', shareGptMessage);
    case 'openai':
      return conversationOf(record.messages, at, 'messages', openAiMessage);
  }
}

const problem = (at: RecordAt, reason: ReadProblemReason, detail: string, turn?: number): ReadProblem => ({
  source: at.source,
  line: at.line,
  ...(turn === undefined ? {} : { turn }),
  id: turn === undefined ? at.id : `${at.id}:${turn}`,
  reason,
  detail,
});

/** A field's text: a string as is, a null or missing field as empty, anything else is not text. */
function textOf(record: Record<string, unknown>, field: string): string | { readonly notText: string } {
  const value = record[field];
  if (value === undefined || value === null) return '';
  return typeof value === 'string' ? value : { notText: `"${field}" is ${kindOf(value)}, not text` };
}

/**
 * An Alpaca or Dolly record's example: the instruction, then a blank line and the `input` (or `context`)
 * when there is one, and the answer.
 */
function pairOf(
  record: Record<string, unknown>,
  at: RecordAt,
  answerField: 'output' | 'response',
  extraField: 'input' | 'context',
): InstructionItem {
  const instruction = textOf(record, 'instruction');
  const extra = textOf(record, extraField);
  const response = textOf(record, answerField);
  for (const text of [instruction, extra, response])
    if (typeof text !== 'string') return problem(at, 'non-text', text.notText);
  const [base, more, answer] = [instruction, extra, response] as [string, string, string];
  return {
    id: at.id,
    source: at.source,
    line: at.line,
    instruction: more.trim() === '' ? base : `${base}\n\n${more}`,
    response: answer,
  };
}

/** One message of a conversation: who speaks, and its text or why it has none. */
interface Message {
  readonly role: 'user' | 'assistant' | 'other';
  readonly text: string | { readonly notText: string };
}

const SHAREGPT_USERS = new Set(['human', 'user']);
const SHAREGPT_ASSISTANTS = new Set(['gpt', 'chatgpt', 'assistant', 'bard', 'bing', 'model']);

function shareGptMessage(entry: Record<string, unknown>): Message | string {
  const { from, value } = entry;
  if (typeof from !== 'string') return 'has no "from" string';
  const role = SHAREGPT_USERS.has(from) ? 'user' : SHAREGPT_ASSISTANTS.has(from) ? 'assistant' : 'other';
  const text = typeof value === 'string' ? value : { notText: `the ${from} "value" is ${kindOf(value)}` };
  return { role, text };
}

function openAiMessage(entry: Record<string, unknown>): Message | string {
  const { role, content } = entry;
  if (typeof role !== 'string') return 'has no "role" string';
  const speaker = role === 'user' ? 'user' : role === 'assistant' ? 'assistant' : 'other';
  return { role: speaker, text: contentText(role, content) };
}

/**
 * The text of OpenAI-style content: a string, or the text parts of a content array joined by line
 * breaks. Any other part (an image, audio, a file) makes the message non-text, and so does no content
 * (an assistant turn that only calls tools).
 */
function contentText(role: string, content: unknown): Message['text'] {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return { notText: `the ${role} content is ${kindOf(content)}` };
  const texts: string[] = [];
  for (const part of content) {
    if (isObject(part) && part.type === 'text' && typeof part.text === 'string') texts.push(part.text);
    else {
      const type =
        isObject(part) && typeof part.type === 'string' ? `a part of type ${part.type}` : kindOf(part);
      return { notText: `the ${role} content holds ${type}` };
    }
  }
  return texts.join('\n');
}

/**
 * A conversation's examples: each assistant message that directly follows a user message, paired with
 * it. Messages in a row from the same side are one message (a reply continued in a second message is
 * one response). Earlier turns are not part of the example; other messages (system prompts, tool
 * output) pair with nothing.
 */
function conversationOf(
  list: unknown,
  at: RecordAt,
  field: string,
  read: (entry: Record<string, unknown>) => Message | string,
): InstructionItem[] {
  if (!Array.isArray(list))
    return [problem(at, 'unknown-shape', `"${field}" is ${kindOf(list)}, not a list`)];
  const messages: Message[] = [];
  for (const [i, entry] of list.entries()) {
    const message = isObject(entry) ? read(entry) : `is ${kindOf(entry)}`;
    if (typeof message === 'string') return [problem(at, 'unknown-shape', `${field}[${i}] ${message}`)];
    const last = messages.at(-1);
    if (last?.role === message.role)
      messages[messages.length - 1] = {
        role: message.role,
        text:
          typeof last.text !== 'string'
            ? last.text
            : typeof message.text !== 'string'
              ? message.text
              : `${last.text}\n\n${message.text}`,
      };
    else messages.push(message);
  }
  const items: InstructionItem[] = [];
  let turn = 0;
  for (let i = 1; i < messages.length; i++) {
    const [user, assistant] = [messages[i - 1], messages[i]] as [Message, Message];
    if (user.role !== 'user' || assistant.role !== 'assistant') continue;
    turn++;
    if (typeof user.text !== 'string') items.push(problem(at, 'non-text', user.text.notText, turn));
    else if (typeof assistant.text !== 'string')
      items.push(problem(at, 'non-text', assistant.text.notText, turn));
    else
      items.push({
        id: `${at.id}:${turn}`,
        source: at.source,
        line: at.line,
        turn,
        instruction: user.text,
        response: assistant.text,
      });
  }
  if (turn === 0)
    return [
      problem(
        at,
        'empty',
        `no user message followed by an assistant message in ${messages.length} ${messages.length === 1 ? 'message' : 'messages'}`,
      ),
    ];
  return items;
}
