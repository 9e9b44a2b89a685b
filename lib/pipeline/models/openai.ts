import {
  ModelConfigError,
  ModelRefusedError,
  ModelRequestError,
  ModelThrottledError,
  ModelTransientError,
} from '../errors.js';
import {
  checkAnswer,
  type GenerateRequest,
  type GenerateResult,
  type JudgeRequest,
  type JudgeResult,
  jsonSchemaOf,
  type ModelClient,
  parseJsonAnswer,
  type Usage,
} from './model-client.js';

/** Options of an {@link OpenAiModelClient}. */
export interface OpenAiModelClientOptions {
  /** The spec the client was made from, e.g. `openai:http://localhost:8000/v1#qwen2.5-7b`. */
  readonly spec: string;
  /** The API root, normally ending in `/v1`; a trailing slash is fine. */
  readonly baseURL: string;
  /** The model name the server knows. */
  readonly model: string;
  /** Sent as a bearer token when set; default `OPENAI_API_KEY`. Local servers need none. */
  readonly apiKey?: string;
  /** The fetch to call; default the global one. */
  readonly fetch?: typeof globalThis.fetch;
  /** Per-request bound in milliseconds; default 120 000. */
  readonly timeoutMs?: number;
}

interface ChatCompletion {
  choices?: {
    finish_reason?: string | null;
    message?: { content?: string | null; refusal?: string | null };
  }[];
  usage?: { prompt_tokens?: number; completion_tokens?: number };
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

/** A model behind an OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, llama.cpp server, Ollama). */
export class OpenAiModelClient implements ModelClient {
  readonly spec: string;
  readonly modelId: string;
  private readonly url: string;
  private readonly apiKey: string | undefined;
  private readonly fetch: typeof globalThis.fetch;
  private readonly timeoutMs: number;

  constructor({ spec, baseURL, model, apiKey, fetch, timeoutMs = 120_000 }: OpenAiModelClientOptions) {
    let url: URL;
    try {
      url = new URL(`${baseURL.replace(/\/+$/, '')}/chat/completions`);
    } catch (error) {
      throw new ModelConfigError(`model spec ${spec}: invalid base URL ${baseURL}`, { cause: error });
    }
    this.spec = spec;
    this.modelId = model;
    this.url = url.href;
    this.apiKey = apiKey ?? (process.env.OPENAI_API_KEY || undefined);
    this.fetch = fetch ?? globalThis.fetch;
    this.timeoutMs = timeoutMs;
  }

  /** Sends one system prompt and one user message; returns the answer text, trimmed. */
  async generate(request: GenerateRequest): Promise<GenerateResult> {
    const { content, usage } = await this.complete(request, {});
    return { text: content.trim(), usage };
  }

  /** Asks for an answer matching `request.schema` through a strict `json_schema` response format. */
  async judge<T>(request: JudgeRequest<T>): Promise<JudgeResult<T>> {
    const schema = closeObjects(jsonSchemaOf(request.schema));
    const { content, usage } = await this.complete(request, {
      response_format: {
        type: 'json_schema',
        json_schema: { name: request.toolName, schema, strict: allRequired(schema) },
      },
    });
    return { value: checkAnswer(request, parseJsonAnswer(content), usage, this.modelId), usage };
  }

  private async complete(
    request: GenerateRequest,
    extra: Record<string, unknown>,
  ): Promise<{ content: string; usage: Usage }> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: 'application/json',
    };
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    const body = JSON.stringify({
      model: this.modelId,
      messages: [
        ...(request.system ? [{ role: 'system', content: request.system }] : []),
        { role: 'user', content: request.prompt },
      ],
      max_tokens: request.maxTokens,
      temperature: request.temperature,
      ...extra,
    });

    let response: Response;
    let text: string;
    try {
      response = await this.fetch(this.url, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      text = await response.text();
    } catch (error) {
      throw this.networkError(error);
    }

    if (!response.ok) throw this.httpError(response.status, text);

    let completion: ChatCompletion;
    try {
      completion = JSON.parse(text) as ChatCompletion;
    } catch (error) {
      // A 200 that is not JSON comes from a proxy or a server mid-restart, not from the model.
      throw new ModelTransientError(`openai ${this.modelId}: HTTP ${response.status} body is not JSON`, {
        cause: error,
      });
    }
    const usage: Usage = {
      inputTokens: completion.usage?.prompt_tokens ?? 0,
      outputTokens: completion.usage?.completion_tokens ?? 0,
    };
    const choice = completion.choices?.[0];
    if (choice?.finish_reason === 'content_filter')
      throw new ModelRefusedError(`${this.modelId} stopped with content_filter`, usage);
    if (choice?.message?.refusal)
      throw new ModelRefusedError(`${this.modelId} refused: ${choice.message.refusal}`, usage);
    return { content: choice?.message?.content ?? '', usage };
  }

  private networkError(error: unknown): unknown {
    if (!(error instanceof Error)) return error;
    const cause = (error as { cause?: { code?: unknown } }).cause;
    const code = (error as { code?: unknown }).code ?? cause?.code;
    const transient =
      error.name === 'TimeoutError' ||
      error.name === 'AbortError' ||
      (typeof code === 'string' && NETWORK_CODES.has(code)) ||
      // undici reports every connection failure as TypeError('fetch failed') with the reason as cause.
      (error instanceof TypeError && error.message === 'fetch failed');
    if (!transient) return error;
    const detail = typeof code === 'string' ? `${error.message} (${code})` : error.message;
    return new ModelTransientError(`openai ${this.modelId}: ${detail}`, { cause: error });
  }

  private httpError(status: number, body: string): Error {
    const message = `openai ${this.modelId}: HTTP ${status}: ${errorMessageOf(body)}`;
    if (status === 429) return new ModelThrottledError(message);
    if (status >= 500 || status === 408) return new ModelTransientError(message);
    if (status === 401 || status === 403 || status === 404) return new ModelConfigError(message);
    return new ModelRequestError(message);
  }
}

/** The message of an OpenAI-style error body `{error: {message}}`, or the start of the raw body. */
function errorMessageOf(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown } | string; message?: unknown };
    const message =
      typeof parsed.error === 'string'
        ? parsed.error
        : (parsed.error?.message ?? parsed.message ?? undefined);
    if (typeof message === 'string' && message) return message.slice(0, 500);
  } catch {
    // not JSON: fall through to the raw text
  }
  return body.slice(0, 200).replace(/\s+/g, ' ').trim() || '(empty body)';
}

/**
 * Sets `additionalProperties: false` on every object schema that leaves it open, as OpenAI's strict
 * mode demands; zod strips unknown keys anyway, so nothing the schema accepted is lost.
 */
function closeObjects(schema: unknown): Record<string, unknown> {
  const walk = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(walk);
    if (!node || typeof node !== 'object') return node;
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(node)) out[key] = walk(value);
    if (out.type === 'object' && out.properties && out.additionalProperties === undefined)
      out.additionalProperties = false;
    return out;
  };
  return walk(schema) as Record<string, unknown>;
}

/**
 * Whether every object lists all its properties as required. Strict mode rejects a schema with an
 * optional property (HTTP 400 on every call), so such a schema is sent non-strict.
 */
function allRequired(node: unknown): boolean {
  if (Array.isArray(node)) return node.every(allRequired);
  if (!node || typeof node !== 'object') return true;
  const { properties, required } = node as { properties?: unknown; required?: unknown };
  if (properties && typeof properties === 'object') {
    const names = Array.isArray(required) ? required : [];
    if (!Object.keys(properties).every((k) => names.includes(k))) return false;
  }
  return Object.values(node).every(allRequired);
}
