import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { InputError } from '../pipeline/errors.js';
import { readJsonl } from '../pipeline/input.js';
import type { InductionExample } from '../pipeline/prompts/induction.js';
import { normalizeText } from '../pipeline/records.js';
import { type ReversePair, unreverseRecord } from './formats.js';
import { isReadProblem, readInstructions } from './read-instructions.js';

/** Examples short enough to show several in one prompt, long enough to teach something. */
const BOUNDS = { response: [20, 600], instruction: [10, 300] } as const;

const within = (text: string, [min, max]: readonly [number, number]) => {
  const length = [...text].length;
  return length >= min && length <= max;
};

/** Lines looked at for a first JSON object before a file is read as an instruction dataset. */
const PEEK_LINES = 100;

/**
 * The pairs of a file: reverse-data's training output in any format (JSON Lines, whatever the file is
 * named), else any instruction dataset, told apart by the first JSON object on a line of its own.
 */
async function* examplesOf(path: string): AsyncGenerator<ReversePair> {
  let reversed: boolean | undefined;
  for await (const row of readJsonl(createReadStream(path), { maxLineBytes: 1_048_576 })) {
    if (!('fields' in row)) {
      if (reversed === undefined && row.line >= PEEK_LINES) break;
      continue;
    }
    const pair = unreverseRecord(row.fields);
    reversed ??= pair !== undefined;
    if (!reversed) break;
    if (pair) yield pair;
  }
  if (reversed) return;
  for await (const item of readInstructions(path)) if (!isReadProblem(item)) yield item;
}

/**
 * Draws `count` few-shot examples for induction from reverse-data's training output or any instruction
 * dataset it reads. The draw is by a hash of each example, so it is the same whatever the file's
 * order or size, and spread over the whole file rather than its first lines; only `count` candidates
 * are held at a time.
 */
export async function drawFewShotExamples(path: string, count: number): Promise<InductionExample[]> {
  const best: { hash: string; example: InductionExample }[] = [];
  for await (const item of examplesOf(path)) {
    const response = normalizeText(item.response);
    const instruction = normalizeText(item.instruction);
    if (!within(response, BOUNDS.response) || !within(instruction, BOUNDS.instruction)) continue;
    const hash = createHash('sha256').update(`${instruction}\u0000${response}`).digest('hex');
    if (best.some((b) => b.hash === hash)) continue;
    if (best.length === count && hash >= (best[count - 1] as { hash: string }).hash) continue;
    best.push({ hash, example: { response, instruction } });
    best.sort((a, b) => (a.hash < b.hash ? -1 : 1));
    if (best.length > count) best.pop();
  }
  if (best.length === 0)
    throw new InputError(
      `${path}: no example fit for few-shot induction (responses of ${BOUNDS.response.join('-')} characters, ` +
        `instructions of ${BOUNDS.instruction.join('-')})`,
    );
  return best.map((b) => b.example);
}
