import { z } from 'zod';
import { JudgeAnswerError } from '../errors.js';

/** Tokens one model call consumed, as the provider reported them. */
export interface Usage {
  readonly inputTokens: number;
  readonly outputTokens: number;
}

/** A single-turn request: a system prompt and one user message. */
export interface GenerateRequest {
  readonly system: string;
  readonly prompt: string;
  readonly maxTokens: number;
  readonly temperature: number;
}

/** A request whose answer must match `schema`: tool use, JSON-schema output or a grammar. */
export interface JudgeRequest<T> extends GenerateRequest {
  readonly schema: z.ZodType<T>;
  /** The tool (or response format) name the answer is given under. */
  readonly toolName: string;
  readonly toolDescription: string;
}

/** A generation's text and what it cost. */
export interface GenerateResult {
  readonly text: string;
  readonly usage: Usage;
}

/** A judge's validated answer and what it cost. */
export interface JudgeResult<T> {
  readonly value: T;
  readonly usage: Usage;
}

/**
 * One model behind one interface, whatever the provider.
 *
 * Errors: `ModelThrottledError` (429, retry later), `ModelTransientError` (5xx, timeouts),
 * `ModelConfigError` (cannot be used as configured), `ModelRefusedError` (content filtered),
 * `JudgeAnswerError` (a structured answer that failed validation). Other errors are bugs.
 */
export interface ModelClient {
  /** The spec the client was made from, e.g. `bedrock:anthropic.claude-3-haiku-20240307-v1:0`. */
  readonly spec: string;
  /** The provider's model id, for the record and the price table. */
  readonly modelId: string;
  generate(request: GenerateRequest): Promise<GenerateResult>;
  judge<T>(request: JudgeRequest<T>): Promise<JudgeResult<T>>;
  /**
   * What tells this model's answers apart beyond its spec, for the call cache: the weights a local file
   * or download holds now, say. Optional; the spec alone names a hosted model.
   */
  identity?(): Promise<string>;
  /** Loads or fetches what the first call needs, so a missing model fails before a run starts; optional. */
  warmUp?(): Promise<void>;
  /** Frees what the client holds (an in-process model); optional. */
  close?(): Promise<void>;
}

/** The JSON schema of a zod schema, as tool-use and response-format APIs take it. */
export function jsonSchemaOf(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _ignored, ...json } = z.toJSONSchema(schema, { target: 'draft-7', io: 'input' }) as Record<
    string,
    unknown
  >;
  return json;
}

/**
 * Finds the first JSON object in free text: the fallback for models without tools or grammars.
 * Returns undefined when there is none.
 */
export function extractJsonObject(text: string): unknown {
  const fenced = /```(?:json)?\s*([\s\S]*?)```/.exec(text);
  const candidates = fenced?.[1] ? [fenced[1], text] : [text];
  for (const candidate of candidates) {
    const start = candidate.indexOf('{');
    if (start < 0) continue;
    let depth = 0;
    let inString = false;
    for (let i = start; i < candidate.length; i++) {
      const ch = candidate[i];
      if (inString) {
        if (ch === '\\') i++;
        else if (ch === '"') inString = false;
      } else if (ch === '"') inString = true;
      else if (ch === '{') depth++;
      else if (ch === '}' && --depth === 0) {
        try {
          return JSON.parse(candidate.slice(start, i + 1));
        } catch {
          break;
        }
      }
    }
  }
  return undefined;
}

/** A judge's answer given as text: the whole text as JSON, else the first JSON object in it. */
export function parseJsonAnswer(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return extractJsonObject(text);
  }
}

/**
 * Validates a judge's answer against the request's schema. An answer that is missing or off-schema is a
 * JudgeAnswerError carrying the usage the call cost; `who` names the model in the message.
 */
export function checkAnswer<T>(request: JudgeRequest<T>, answer: unknown, usage: Usage, who: string): T {
  if (answer === undefined)
    throw new JudgeAnswerError(`${who} answered ${request.toolName} without a JSON object`, usage);
  const parsed = request.schema.safeParse(answer);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues
    .slice(0, 5)
    .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('; ');
  throw new JudgeAnswerError(`${who} answered ${request.toolName} off-schema: ${issues}`, usage, {
    cause: parsed.error,
  });
}
