import type { QualityConfig } from '../config.js';
import { sameText } from '../records.js';
import {
  chosenLikeRejected,
  fragmentInstruction,
  isBlank,
  lengthIssue,
  spreadsheetArtifact,
  stockRefusal,
} from './checks.js';
import { textSimilarity } from './near-duplicates.js';

/** Why a record fails a quality gate: the reject's reason and detail. */
export interface Defect {
  readonly reason: string;
  readonly detail: string;
}

/** The first defect of an induced instruction for its text, if any: the gate of the induce stage. */
export function instructionDefect(
  instruction: string,
  text: string,
  quality: QualityConfig,
): Defect | undefined {
  if (isBlank(instruction)) return { reason: 'empty-instruction', detail: 'the model wrote no instruction' };
  if (
    sameText(instruction, text) ||
    textSimilarity(instruction, text, quality.shingleSize) >= quality.nearDuplicateThreshold
  )
    return { reason: 'instruction-echoes-text', detail: 'the instruction repeats the text' };
  const length = lengthIssue(instruction, quality.lengths.instruction);
  if (length) return { reason: `instruction-${length.rule}`, detail: length.detail };
  const fragment = fragmentInstruction(instruction);
  if (fragment) return { reason: 'fragment-instruction', detail: fragment.detail };
  const artifact = spreadsheetArtifact(instruction);
  if (artifact) return { reason: 'spreadsheet-artifact', detail: `instruction ${artifact.detail}` };
  return undefined;
}

/** The first defect of a pair's sides, whatever any judge says: empty, equal or near-equal sides. */
export function pairDefect(
  pair: { instruction: string; chosen: string; text: string },
  quality: QualityConfig,
): Defect | undefined {
  for (const [side, value] of [
    ['prompt', pair.instruction],
    ['chosen', pair.chosen],
    ['rejected', pair.text],
  ] as const)
    if (isBlank(value)) return { reason: 'empty-side', detail: `the ${side} side is empty` };
  const alike = chosenLikeRejected(
    pair.chosen,
    pair.text,
    quality.nearDuplicateThreshold,
    quality.shingleSize,
  );
  return alike && { reason: alike.rule, detail: alike.detail };
}

/** The first defect of a chosen response for its pair, if any: the gate of the respond stage. */
export function chosenDefect(
  pair: { instruction: string; chosen: string; text: string },
  quality: QualityConfig,
): Defect | undefined {
  if (isBlank(pair.chosen)) return { reason: 'empty-response', detail: 'the model wrote no response' };
  const sides = pairDefect(pair, quality);
  if (sides) return sides;
  const length = lengthIssue(pair.chosen, quality.lengths.chosen);
  if (length) return { reason: `chosen-${length.rule}`, detail: length.detail };
  const artifact = spreadsheetArtifact(pair.chosen);
  if (artifact) return { reason: 'spreadsheet-artifact', detail: `chosen ${artifact.detail}` };
  if (quality.rejectStockRefusals && stockRefusal(pair.chosen))
    return { reason: 'stock-refusal', detail: 'a canned refusal that neither explains nor offers anything' };
  return undefined;
}
