import { z } from 'zod';
import { JudgeAnswerError } from '../errors.js';
import type { CachedCall } from './call-cache.js';
import {
  checkAnswer,
  type GenerateRequest,
  type JudgeRequest,
  jsonSchemaOf,
  parseJsonAnswer,
  type Usage,
} from './model-client.js';

/**
 * A Converse request body without its model id: what `ConverseCommand` sends, and what a Bedrock batch
 * job of invocation type `Converse` takes as each record's `modelInput`.
 */
export interface ConverseBody {
  readonly system?: { text: string }[];
  readonly messages: { role: 'user'; content: { text: string }[] }[];
  readonly inferenceConfig: { maxTokens: number; temperature: number };
  readonly toolConfig?: {
    tools: {
      toolSpec: { name: string; description: string; inputSchema: { json: Record<string, unknown> } };
    }[];
    toolChoice: { tool: { name: string } };
  };
}

const isJudge = (request: GenerateRequest | JudgeRequest<unknown>): request is JudgeRequest<unknown> =>
  'schema' in request;

/**
 * The Converse body of a request. A judge answers through a forced tool whose input schema is the zod
 * schema's JSON schema; a judge of a model without tool use (`toolUse: false`) is asked for JSON text.
 */
export function converseBody(request: GenerateRequest | JudgeRequest<unknown>, toolUse = true): ConverseBody {
  const jsonText = isJudge(request) && !toolUse;
  const prompt = jsonText
    ? `${request.prompt}\n\nAnswer with only a JSON object (no prose, no code fence) that matches this ` +
      `JSON schema:\n${JSON.stringify(jsonSchemaOf(request.schema))}`
    : request.prompt;
  return {
    // A tuned model's reversed prompt has no system prompt, and Converse refuses an empty text block.
    ...(request.system ? { system: [{ text: request.system }] } : {}),
    messages: [{ role: 'user', content: [{ text: prompt }] }],
    inferenceConfig: { maxTokens: request.maxTokens, temperature: request.temperature },
    ...(isJudge(request) && toolUse
      ? {
          toolConfig: {
            tools: [
              {
                toolSpec: {
                  name: request.toolName,
                  description: request.toolDescription,
                  inputSchema: { json: jsonSchemaOf(request.schema) },
                },
              },
            ],
            toolChoice: { tool: { name: request.toolName } },
          },
        }
      : {}),
  };
}

/** A Converse response body, as far as the pipeline reads it. */
export const ConverseResponse = z.object({
  output: z
    .object({
      message: z
        .object({
          content: z
            .array(
              z.object({
                text: z.string().optional(),
                toolUse: z.object({ name: z.string().optional(), input: z.unknown() }).optional(),
              }),
            )
            .optional(),
        })
        .optional(),
    })
    .optional(),
  stopReason: z.string().optional(),
  usage: z.object({ inputTokens: z.number().optional(), outputTokens: z.number().optional() }).optional(),
});
export type ConverseResponse = z.infer<typeof ConverseResponse>;

/** The tokens a Converse response reports. */
export const converseUsage = (response: ConverseResponse): Usage => ({
  inputTokens: response.usage?.inputTokens ?? 0,
  outputTokens: response.usage?.outputTokens ?? 0,
});

/** The text blocks of a Converse answer, joined and trimmed. */
export const converseText = (response: ConverseResponse): string =>
  (response.output?.message?.content ?? [])
    .map((b) => b.text ?? '')
    .join('')
    .trim();

/**
 * A judge's answer in a Converse response: the forced tool's input (or, without tool use, the JSON
 * text), validated with the request's schema. Throws JudgeAnswerError, carrying the usage and the
 * validation error as `cause`, when there is no valid answer.
 */
export function converseJudgeAnswer<T>(
  request: JudgeRequest<T>,
  response: ConverseResponse,
  who: string,
  toolUse = true,
): T {
  const usage = converseUsage(response);
  if (!toolUse) return checkAnswer(request, parseJsonAnswer(converseText(response)), usage, who);
  const toolUses = (response.output?.message?.content ?? []).flatMap((b) => (b.toolUse ? [b.toolUse] : []));
  const called = toolUses.find((t) => t.name === request.toolName) ?? toolUses[0];
  if (!called)
    throw new JudgeAnswerError(
      `${who} did not call tool ${request.toolName} (stopReason ${response.stopReason})`,
      usage,
    );
  return checkAnswer(request, called.input, usage, who);
}

/** Stop reasons of an answer a guardrail or content filter withheld: a refusal, with no content. */
const REFUSALS: ReadonlySet<string> = new Set(['guardrail_intervened', 'content_filtered']);

/**
 * A Converse response read as the call cache keeps answers: a text for a generation; for a judge its
 * validated answer, or why there is none; a refusal when a guardrail or content filter stopped the model.
 */
export function converseAnswer(
  request: GenerateRequest | JudgeRequest<unknown>,
  response: ConverseResponse,
  who: string,
  toolUse = true,
): CachedCall {
  const usage = converseUsage(response);
  if (REFUSALS.has(response.stopReason ?? ''))
    return { kind: 'refused', message: `${who} stopped with ${response.stopReason}`, usage };
  if (!isJudge(request)) return { kind: 'text', text: converseText(response), usage };
  try {
    return { kind: 'answer', value: converseJudgeAnswer(request, response, who, toolUse), usage };
  } catch (error) {
    if (!(error instanceof JudgeAnswerError)) throw error;
    return { kind: 'invalid-answer', message: error.message, usage };
  }
}

/**
 * A Converse response as a batch job writes it, held to more than on-demand needs: a line whose output
 * has no message content or no stop reason is not an answer, and goes back to on-demand.
 */
export const BatchConverseResponse = ConverseResponse.refine(
  (r) =>
    r.stopReason !== undefined &&
    ((r.output?.message?.content?.length ?? 0) > 0 || REFUSALS.has(r.stopReason)),
  'no stop reason or no message content',
);
