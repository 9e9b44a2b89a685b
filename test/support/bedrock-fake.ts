/**
 * A local fake of the Bedrock Runtime Converse endpoint, for tests and manual runs.
 *
 * The SDK's Bedrock Runtime client speaks HTTP/2 only, so this is an h2c server (`http2.createServer`).
 * Point a client at it with `endpoint: url` or `AWS_ENDPOINT_URL_BEDROCK_RUNTIME=url`; any credentials do.
 *
 * Standalone: `npx tsx test/support/bedrock-fake.ts --port 4010 [--latency 50] [--throttle-rate 0.1]
 * [--error-rate 0.05] [--malformed-tool-rate 0.05] [--seed 1] [--requests-per-minute 600]` prints the
 * URL and serves until killed.
 */
import { createHash } from 'node:crypto';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

/** One Converse request as the fake received it. */
export interface ConverseRequestRecord {
  /** The model id from the path, URL-decoded. */
  readonly modelId: string;
  /** The parsed JSON body (`messages`, `system`, `inferenceConfig`, `toolConfig`, ...). */
  readonly body: ConverseBody;
  readonly hasToolConfig: boolean;
  /** `body.toolConfig.toolChoice` when present, e.g. `{ tool: { name } }`. */
  readonly toolChoice: { tool?: { name?: string } } | undefined;
  /** Whether the request was SigV4-signed (carried an `authorization` header). */
  readonly signed: boolean;
}

/** The parts of a Converse request body the fake reads. */
export interface ConverseBody {
  readonly messages?: { role?: string; content?: { text?: string }[] }[];
  readonly system?: { text?: string }[];
  readonly inferenceConfig?: { maxTokens?: number; temperature?: number };
  readonly toolConfig?: {
    tools?: { toolSpec?: { name?: string; description?: string; inputSchema?: { json?: unknown } } }[];
    toolChoice?: { tool?: { name?: string } } | Record<string, unknown>;
  };
  readonly [key: string]: unknown;
}

/**
 * What a `respond` hook may answer: a text, a tool input (sent as a `toolUse` block), an error the SDK
 * will parse into its exception class, or a raw 200 body. `undefined` falls back to the default answer.
 */
export type FakeReply =
  | { readonly text: string; readonly stopReason?: string }
  | { readonly toolInput: unknown; readonly stopReason?: string }
  | { readonly error: { readonly status: number; readonly type: string; readonly message?: string } }
  | { readonly body: unknown };

/** Options of {@link startBedrockFake}. */
export interface BedrockFakeOptions {
  /** Port to listen on; default 0 (any free port). */
  readonly port?: number;
  /** Delay before each answer, in milliseconds; default 0. */
  readonly latencyMs?: number;
  /** Share of requests answered 429 `ThrottlingException` (0..1); default 0. */
  readonly throttleRate?: number;
  /** Share of requests answered 500 / 503 `ServiceUnavailableException` (0..1); default 0. */
  readonly errorRate?: number;
  /** Share of tool requests answered with an input that violates the tool's schema (0..1); default 0. */
  readonly malformedToolRate?: number;
  /**
   * A per-minute request quota, as a token bucket refilled continuously and holding one second's worth
   * (at least one request): a request arriving to an empty bucket is answered 429 `ThrottlingException`
   * and takes nothing from it. Default: no quota.
   */
  readonly requestsPerMinute?: number;
  /** Seed of the PRNG that draws the rates above; default 1. */
  readonly seed?: number;
  /** Overrides the answer to a request; runs after the throttle and error draws. */
  readonly respond?: (
    request: ConverseRequestRecord,
  ) => FakeReply | undefined | Promise<FakeReply | undefined>;
}

/** A running fake. */
export interface BedrockFake {
  /** `http://127.0.0.1:<port>`, for `endpoint` or `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`. */
  readonly url: string;
  /** Every request received, in order. */
  readonly requests: ConverseRequestRecord[];
  /** How many requests were answered 200 with a model reply (throttles and errors excluded). */
  readonly answered: number;
  /** How many requests were answered 429 because `requestsPerMinute` was spent. */
  readonly quotaThrottled: number;
  /** Stops the server and drops open HTTP/2 sessions (SDK clients keep theirs open). */
  close(): Promise<void>;
}

const ROUTE = /^\/model\/([^/]+)\/converse$/;

/** Starts the fake on 127.0.0.1. */
export async function startBedrockFake(options: BedrockFakeOptions = {}): Promise<BedrockFake> {
  const {
    port = 0,
    latencyMs = 0,
    throttleRate = 0,
    errorRate = 0,
    malformedToolRate = 0,
    seed = 1,
    requestsPerMinute,
    respond,
  } = options;
  const quota = requestsPerMinute === undefined ? undefined : quotaBucket(requestsPerMinute);
  const random = mulberry32(seed);
  const requests: ConverseRequestRecord[] = [];
  const sessions = new Set<http2.ServerHttp2Session>();
  let errorCount = 0;
  let answered = 0;
  let quotaThrottled = 0;

  const server = http2.createServer();
  server.on('session', (session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
  });
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      handle(String(headers[':method']), String(headers[':path']), Boolean(headers.authorization), raw)
        .then((answer) => send(stream, answer))
        .catch((error: unknown) =>
          send(stream, errorAnswer(500, 'InternalServerException', `fake failed: ${String(error)}`)),
        );
    });
    stream.on('error', () => {
      // the client went away; nothing to answer
    });
  });

  async function handle(method: string, path: string, signed: boolean, raw: string): Promise<Answer> {
    const match = ROUTE.exec(path.split('?')[0] ?? '');
    if (method !== 'POST' || !match?.[1])
      return errorAnswer(404, 'UnknownOperationException', `no route for ${method} ${path}`);
    let body: ConverseBody;
    try {
      body = JSON.parse(raw) as ConverseBody;
    } catch {
      return errorAnswer(400, 'ValidationException', 'request body is not JSON');
    }
    const record: ConverseRequestRecord = {
      modelId: decodeURIComponent(match[1]),
      body,
      hasToolConfig: body.toolConfig !== undefined,
      toolChoice: body.toolConfig?.toolChoice as ConverseRequestRecord['toolChoice'],
      signed,
    };
    requests.push(record);
    // The quota is spent on arrival, as the service counts a request when it receives it.
    const overQuota = quota ? !quota.take(Date.now()) : false;
    if (latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, latencyMs));

    // Draw every rate on every request so one rate does not shift the sequence of another.
    const throttle = random() < throttleRate;
    const fail = random() < errorRate;
    const malformed = random() < malformedToolRate;
    if (overQuota) {
      quotaThrottled++;
      return errorAnswer(429, 'ThrottlingException', 'Too many requests, please wait before trying again.');
    }
    if (throttle)
      return errorAnswer(429, 'ThrottlingException', 'Too many requests, please wait before trying again.');
    if (fail) {
      errorCount++;
      return errorCount % 2
        ? errorAnswer(503, 'ServiceUnavailableException', 'Service unavailable. Try again later.')
        : errorAnswer(500, 'InternalServerException', 'An internal server error occurred.');
    }
    const reply = (await respond?.(record)) ?? defaultReply(record, malformed);
    const answer = replyAnswer(record, reply, latencyMs);
    if (answer.status === 200) answered++;
    return answer;
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${address.port}`,
    requests,
    get answered() {
      return answered;
    },
    get quotaThrottled() {
      return quotaThrottled;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        for (const session of sessions) session.destroy();
      }),
  };
}

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: unknown;
}

function send(stream: http2.ServerHttp2Stream, answer: Answer): void {
  if (stream.destroyed || stream.closed) return;
  stream.respond({ ':status': answer.status, 'content-type': 'application/json', ...answer.headers });
  stream.end(JSON.stringify(answer.body));
}

function errorAnswer(status: number, type: string, message: string): Answer {
  return { status, headers: { 'x-amzn-errortype': type }, body: { message } };
}

function replyAnswer(record: ConverseRequestRecord, reply: FakeReply, latencyMs: number): Answer {
  if ('error' in reply)
    return errorAnswer(reply.error.status, reply.error.type, reply.error.message ?? reply.error.type);
  if ('body' in reply) return { status: 200, headers: {}, body: reply.body };
  const inputTokens = estimateTokens(requestText(record.body));
  let content: unknown[];
  let outputTokens: number;
  let stopReason: string;
  if ('toolInput' in reply) {
    const toolName = forcedToolName(record.body) ?? 'tool';
    content = [
      {
        toolUse: {
          toolUseId: `tooluse_${shortHash(JSON.stringify(record.body))}`,
          name: toolName,
          input: reply.toolInput,
        },
      },
    ];
    outputTokens = estimateTokens(JSON.stringify(reply.toolInput ?? null));
    stopReason = reply.stopReason ?? 'tool_use';
  } else {
    // Honour maxTokens so a test can provoke a truncated answer.
    const maxChars = (record.body.inferenceConfig?.maxTokens ?? Number.POSITIVE_INFINITY) * 4;
    const text = reply.text.length > maxChars ? reply.text.slice(0, maxChars) : reply.text;
    content = [{ text }];
    outputTokens = estimateTokens(text);
    stopReason = reply.stopReason ?? (text.length < reply.text.length ? 'max_tokens' : 'end_turn');
  }
  return {
    status: 200,
    headers: {},
    body: {
      output: { message: { role: 'assistant', content } },
      stopReason,
      usage: { inputTokens, outputTokens, totalTokens: inputTokens + outputTokens },
      metrics: { latencyMs },
    },
  };
}

/**
 * A `respond` hook for whole-pipeline runs: the evaluate judge prefers the fake's own generated answer
 * (the chosen response) over the input text, so records can become pairs.
 */
export function preferFakeAnswers(request: ConverseRequestRecord): FakeReply | undefined {
  if (request.toolChoice?.tool?.name !== 'record_preference') return undefined;
  const aIsChosen = /<response_a>Fake answer/.test(userText(request.body));
  return { toolInput: { preferred: aIsChosen ? 'A' : 'B', rationale: 'It is safe.', score: 5 } };
}

/** The deterministic default: a schema-shaped tool input, or a text derived from the data in the user message. */
function defaultReply(record: ConverseRequestRecord, malformed: boolean): FakeReply {
  if (record.hasToolConfig) {
    const name = forcedToolName(record.body);
    const tool =
      record.body.toolConfig?.tools?.find((t) => t.toolSpec?.name === name) ??
      record.body.toolConfig?.tools?.[0];
    const schema = tool?.toolSpec?.inputSchema?.json;
    return { toolInput: malformed ? malformedFor(schema) : sampleFor(schema) };
  }
  const prompt = userText(record.body);
  // The data a prompt carries sits in its last tagged block: answer from it, as a model would.
  const data = [...prompt.matchAll(/<(response|request)>([\s\S]*?)<\/\1>/g)].pop()?.[2] ?? prompt;
  const words = data.split(/\s+/).filter(Boolean).slice(0, 8).join(' ');
  return { text: `Fake answer ${shortHash(prompt)}: ${words}` };
}

function forcedToolName(body: ConverseBody): string | undefined {
  const choice = body.toolConfig?.toolChoice as { tool?: { name?: string } } | undefined;
  return choice?.tool?.name ?? body.toolConfig?.tools?.[0]?.toolSpec?.name;
}

function userText(body: ConverseBody): string {
  const users = (body.messages ?? []).filter((m) => m.role === 'user');
  return (users.at(-1)?.content ?? []).map((c) => c.text ?? '').join('');
}

function requestText(body: ConverseBody): string {
  const system = (body.system ?? []).map((s) => s.text ?? '').join('');
  const messages = (body.messages ?? []).flatMap((m) => m.content ?? []).map((c) => c.text ?? '');
  const tools = body.toolConfig ? JSON.stringify(body.toolConfig) : '';
  return system + messages.join('') + tools;
}

function estimateTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

type JsonSchema = Record<string, unknown>;

// Values a judge would give to keep a record: the top score, `true`, an affirmative enum member.
const AFFIRMATIVE =
  /^(yes|y|keep|kept|pass|passed|accept|accepted|approve|approved|valid|good|true|ok|safe|harmful)$/i;

/** A value that satisfies `schema` (the draft-7 subset zod emits), chosen so a judge keeps the record. */
export function sampleFor(schema: unknown, root: unknown = schema, name = 'value'): unknown {
  if (!schema || typeof schema !== 'object') return null;
  const s = schema as JsonSchema;
  if (typeof s.$ref === 'string') return sampleFor(resolveRef(root, s.$ref), root, name);
  if ('const' in s) return s.const;
  if ('default' in s) return s.default;
  if (Array.isArray(s.enum) && s.enum.length)
    return s.enum.find((v) => AFFIRMATIVE.test(String(v))) ?? s.enum[0];
  const union = (s.anyOf ?? s.oneOf) as unknown[] | undefined;
  if (Array.isArray(union) && union.length) {
    const nonNull = union.find((u) => (u as JsonSchema)?.type !== 'null') ?? union[0];
    return sampleFor(nonNull, root, name);
  }
  if (Array.isArray(s.allOf) && s.allOf.length) return sampleFor(s.allOf[0], root, name);
  const types = Array.isArray(s.type) ? (s.type as string[]) : [s.type as string | undefined];
  const type = types.find((t) => t !== 'null') ?? types[0] ?? (s.properties ? 'object' : undefined);
  switch (type) {
    case 'object': {
      const properties = (s.properties ?? {}) as Record<string, unknown>;
      const required = Array.isArray(s.required) ? (s.required as string[]) : [];
      const out: Record<string, unknown> = {};
      for (const key of required) out[key] = sampleFor(properties[key] ?? {}, root, key);
      return out;
    }
    case 'array': {
      const count = Math.max(typeof s.minItems === 'number' ? s.minItems : 1, 1);
      const capped = typeof s.maxItems === 'number' ? Math.min(count, s.maxItems) : count;
      return Array.from({ length: capped }, () => sampleFor(s.items ?? {}, root, name));
    }
    case 'integer':
    case 'number':
      return sampleNumber(s, type === 'integer');
    case 'boolean':
      return true;
    case 'null':
      return null;
    case 'string':
      return sampleString(s, name);
    default:
      return null;
  }
}

function sampleNumber(s: JsonSchema, integer: boolean): number {
  const step = integer ? 1 : 0.001;
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  const max =
    num(s.maximum) ??
    (num(s.exclusiveMaximum) !== undefined ? (num(s.exclusiveMaximum) as number) - step : undefined);
  const min =
    num(s.minimum) ??
    (num(s.exclusiveMinimum) !== undefined ? (num(s.exclusiveMinimum) as number) + step : undefined);
  let value = max ?? Math.max(5, min ?? 5);
  if (integer) value = Math.floor(value);
  return value;
}

function sampleString(s: JsonSchema, name: string): string {
  switch (s.format) {
    case 'date-time':
      return '2024-01-01T00:00:00.000Z';
    case 'date':
      return '2024-01-01';
    case 'email':
      return 'fake@example.com';
    case 'uri':
    case 'url':
      return 'https://example.com/';
    case 'uuid':
      return '00000000-0000-4000-8000-000000000000';
  }
  let text = `Fake ${name}.`;
  const minLength = typeof s.minLength === 'number' ? s.minLength : 0;
  while (text.length < minLength) text += ' Fake.';
  if (typeof s.maxLength === 'number') text = text.slice(0, s.maxLength);
  return text;
}

/** An input that breaks `schema`: required properties missing, or the wrong type altogether. */
function malformedFor(schema: unknown): unknown {
  const s = (schema ?? {}) as JsonSchema;
  if (Array.isArray(s.required) && s.required.length) return { unexpected: 'malformed answer' };
  return 'malformed answer';
}

function resolveRef(root: unknown, ref: string): unknown {
  if (!ref.startsWith('#/')) return {};
  let node: unknown = root;
  for (const part of ref.slice(2).split('/')) {
    node = (node as Record<string, unknown> | undefined)?.[part.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return node ?? {};
}

/** A token bucket of `perMinute` requests holding one second's worth, full at the start. */
function quotaBucket(perMinute: number): { take(now: number): boolean } {
  if (!(perMinute > 0 && Number.isFinite(perMinute)))
    throw new RangeError(`requestsPerMinute must be a positive number, got ${perMinute}`);
  const capacity = Math.max(1, perMinute / 60);
  let level = capacity;
  let updatedAt = Date.now();
  return {
    take(now) {
      level = Math.min(capacity, level + ((now - updatedAt) * perMinute) / 60_000);
      updatedAt = now;
      if (level < 1) return false;
      level -= 1;
      return true;
    },
  };
}

/** A small seeded PRNG: the same seed draws the same throttles and errors. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '4010' },
      latency: { type: 'string', default: '0' },
      'throttle-rate': { type: 'string', default: '0' },
      'error-rate': { type: 'string', default: '0' },
      'malformed-tool-rate': { type: 'string', default: '0' },
      seed: { type: 'string', default: '1' },
      'requests-per-minute': { type: 'string' },
    },
  });
  const fake = await startBedrockFake({
    port: Number(values.port),
    latencyMs: Number(values.latency),
    throttleRate: Number(values['throttle-rate']),
    errorRate: Number(values['error-rate']),
    malformedToolRate: Number(values['malformed-tool-rate']),
    seed: Number(values.seed),
    requestsPerMinute:
      values['requests-per-minute'] === undefined ? undefined : Number(values['requests-per-minute']),
  });
  console.log(fake.url);
  const stop = () => {
    fake.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
