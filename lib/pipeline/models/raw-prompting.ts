import { z } from 'zod';
import { type JudgeRequest, jsonSchemaOf } from './model-client.js';

/**
 * What a raw-prompt model's answer body says, once read: the text, the token counts it reports and a
 * content-filter stop. Shared by the Bedrock InvokeModel and SageMaker providers.
 */
export interface Reading {
  readonly text: string;
  readonly inputTokens?: number | undefined;
  readonly outputTokens?: number | undefined;
  readonly refusal?: string | undefined;
}

/** A token count in an answer body. */
export const Count = z.number().int().nonnegative();

/** A list of at least one `item`, typed so its first element is there. */
export const nonEmpty = <T extends z.ZodType>(item: T) => z.tuple([item], item);

/** The prompt a prompt/completion model sees: the system prompt and a blank line, when there is one. */
export function rawPrompt(system: string, prompt: string): string {
  return system.trim() ? `${system}\n\n${prompt}` : prompt;
}

/** The judge's prompt for a model without tool use: the JSON schema it must answer with. */
export function jsonAnswerPrompt<T>(request: JudgeRequest<T>): string {
  return (
    `${request.prompt}\n\nAnswer with only a JSON object (no prose, no code fence) that matches this ` +
    `JSON schema:\n${JSON.stringify(jsonSchemaOf(request.schema))}`
  );
}

/** A rough token count, about four characters a token, for when the service reports none. */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

/** The first issues of a zod error, on one line. */
export function zodSummary(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}
