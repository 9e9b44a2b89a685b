import { createHash } from 'node:crypto';
import { z } from 'zod';
import { CALL_CACHE_PREFIX } from '../keys.js';
import type { Store } from '../store/store.js';
import { type GenerateRequest, type JudgeRequest, jsonSchemaOf } from './model-client.js';

const CachedUsage = z.object({
  inputTokens: z.number().int().nonnegative(),
  outputTokens: z.number().int().nonnegative(),
});

/**
 * One answered model call, as the cache keeps it: a text, a judge's validated answer, an answer that
 * failed validation, or a refusal. Each carries the usage it was paid for, and who paid it, so a run
 * that reads back an answer it paid for in an attempt that never finished still counts that cost.
 */
/** Who paid for an answer: the execution and the shard whose call it was. */
const PaidBy = z.object({ execution: z.string(), shard: z.string() });

const paid = { usage: CachedUsage, paidBy: PaidBy.optional() };
export const CachedCall = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('text'), text: z.string(), ...paid }),
  z.object({ kind: z.literal('answer'), value: z.unknown(), ...paid }),
  z.object({ kind: z.literal('invalid-answer'), message: z.string(), ...paid }),
  z.object({ kind: z.literal('refused'), message: z.string(), ...paid }),
]);
export type CachedCall = z.infer<typeof CachedCall>;

/** What identifies a model call: everything that can change its answer, and nothing else. */
export interface CallIdentity {
  /** The model spec: provider and model id, e.g. `bedrock:anthropic.claude-3-haiku-20240307-v1:0`. */
  readonly spec: string;
  readonly request: GenerateRequest | JudgeRequest<unknown>;
  /** The hash of the prompt template the request was rendered from. */
  readonly templateHash: string;
  /** 0 for a first ask; a judge asked again after an invalid answer is a different call. */
  readonly attempt: number;
}

/** Bumped when the meaning of an entry changes, so old entries stop matching. */
const KEY_VERSION = 1;

/** JSON with object keys sorted at every level, so equal requests hash equally. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * The content address of a call: sha256 of provider and model, the canonical request (system, prompt,
 * answer schema), the inference parameters, the template hash and the attempt.
 */
export function callKey({ spec, request, templateHash, attempt }: CallIdentity): string {
  const judge = 'schema' in request;
  const canonical = canonicalJson({
    v: KEY_VERSION,
    spec,
    kind: judge ? 'judge' : 'generate',
    system: request.system,
    prompt: request.prompt,
    inference: { maxTokens: request.maxTokens, temperature: request.temperature },
    answer: judge
      ? { schema: jsonSchemaOf(request.schema), tool: request.toolName, description: request.toolDescription }
      : undefined,
    templateHash,
    attempt,
  });
  return createHash('sha256').update(canonical).digest('hex');
}

/**
 * Answered model calls by content address, in a store: the run bucket in AWS (`cache/calls/`), a folder
 * shared by every run on the machine locally. A rerun pays only for calls whose key changed.
 */
export class CallCache {
  constructor(
    private readonly store: Store,
    private readonly prefix = CALL_CACHE_PREFIX,
  ) {}

  /** The store key of a call key; two hex characters of fan-out keep directories and S3 prefixes small. */
  keyOf(key: string): string {
    return `${this.prefix}${key.slice(0, 2)}/${key}.json`;
  }

  /** The cached answer, or undefined. An unreadable entry counts as absent and is overwritten later. */
  async get(key: string): Promise<CachedCall | undefined> {
    const text = await this.store.tryGet(this.keyOf(key));
    if (text === undefined) return undefined;
    try {
      const parsed = CachedCall.safeParse(JSON.parse(text));
      return parsed.success ? parsed.data : undefined;
    } catch {
      return undefined;
    }
  }

  /** Keeps an answer; the write is atomic, so a crash leaves the whole entry or none. */
  async put(key: string, entry: CachedCall): Promise<void> {
    await this.store.put(this.keyOf(key), JSON.stringify(entry));
  }
}
