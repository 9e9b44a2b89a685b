import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { CachedCall } from '../models/call-cache.js';
import {
  BatchConverseResponse,
  type ConverseBody,
  converseAnswer,
  converseBody,
} from '../models/converse-body.js';
import type { GenerateRequest, JudgeRequest, Usage } from '../models/model-client.js';

/**
 * Bedrock batch inference as the pipeline uses it: a stage's model calls that the call cache cannot
 * answer are written as one or more batch jobs (invocation type `Converse`, about half the on-demand
 * price); each answer read back is put into the call cache under its call's key, and the stage then
 * runs as on-demand does, finding its answers there. A record the job left out or failed is simply a
 * cache miss, paid on-demand: the fallback needs no code of its own, and batch and on-demand runs with
 * the same deterministic model give the same pairs.
 */

/** One model call a stage could not answer from the cache: its cache key and its request. */
export interface BatchCall {
  readonly key: string;
  readonly request: GenerateRequest | JudgeRequest<unknown>;
  /** Whether the judge answers through a forced tool; false for a model without tool use. */
  readonly toolUse?: boolean;
}

/** A line of a batch job's input: `modelInput` is a Converse request body. */
export const BatchInputLine = z.object({ recordId: z.string().length(11), modelInput: z.unknown() });
export type BatchInputLine = z.infer<typeof BatchInputLine>;

/** A line of a batch job's `.jsonl.out`: the Converse response, or the error in its place. */
export const BatchOutputLine = z.object({
  recordId: z.string(),
  modelInput: z.unknown().optional(),
  modelOutput: z.unknown().optional(),
  error: z
    .object({ errorCode: z.union([z.number(), z.string()]).optional(), errorMessage: z.string().optional() })
    .optional(),
});
export type BatchOutputLine = z.infer<typeof BatchOutputLine>;

/** Record ids are 11 alphanumeric characters: `R` and the record's place in its job, in base 36. */
export const recordIdOf = (index: number): string => `R${index.toString(36).padStart(10, '0')}`;

/**
 * A job's name and idempotency token, from run, stage and the calls it answers: a retried submit of the
 * same calls starts no second billed job, and a job of other calls can never be mistaken for it.
 */
export function jobIdentity(
  runId: string,
  stage: string,
  keys: readonly string[],
): { jobName: string; token: string } {
  const hash = createHash('sha256')
    .update(JSON.stringify([runId, stage, [...keys].sort()]))
    .digest('hex')
    .slice(0, 32);
  return { jobName: `safer-instruct-${stage}-${hash}`, token: hash };
}

/**
 * The calls of one stage as jobs of at most `maxPerJob` and at least `minPerJob` records, as even as
 * they can be; what no job can take (fewer than `minPerJob` calls in all, or a rest beyond the jobs
 * that fit) is left to on-demand.
 */
export function chunkCalls<T>(
  calls: readonly T[],
  maxPerJob: number,
  minPerJob: number,
): { jobs: T[][]; onDemand: T[] } {
  if (
    !(Number.isInteger(minPerJob) && Number.isInteger(maxPerJob) && minPerJob >= 1 && minPerJob <= maxPerJob)
  )
    throw new RangeError(
      `batch job bounds must be whole numbers with 1 <= min <= max, not ${minPerJob} and ${maxPerJob}`,
    );
  const n = calls.length;
  if (n < minPerJob) return { jobs: [], onDemand: [...calls] };
  let count = Math.ceil(n / maxPerJob);
  while (count > 1 && Math.floor(n / count) < minPerJob) count--;
  const batched = Math.min(n, count * maxPerJob);
  const jobs: T[][] = [];
  for (let i = 0, start = 0; i < count; i++) {
    const size = Math.floor(batched / count) + (i < batched % count ? 1 : 0);
    jobs.push(calls.slice(start, start + size));
    start += size;
  }
  return { jobs, onDemand: calls.slice(batched) };
}

/** A batch job's input JSONL and the call behind each record id. */
export function batchInput(calls: readonly BatchCall[]): { jsonl: string; calls: Map<string, BatchCall> } {
  const byRecord = new Map<string, BatchCall>();
  const lines = calls.map((call, i) => {
    const recordId = recordIdOf(i);
    byRecord.set(recordId, call);
    const modelInput: ConverseBody = converseBody(call.request, call.toolUse ?? true);
    return JSON.stringify({ recordId, modelInput });
  });
  return { jsonl: lines.length ? `${lines.join('\n')}\n` : '', calls: byRecord };
}

/** What a job's output gave: answers to cache, and the calls left to on-demand with why. */
export interface BatchJoin {
  readonly answers: Map<string, CachedCall>;
  readonly errored: { readonly key: string; readonly recordId: string; readonly reason: string }[];
  readonly missing: string[];
  /** Output lines that named no open call of the job (one answered meanwhile), or could not be read. */
  readonly unreadable: number;
  /** The record ids the output has a line for, open or not. */
  readonly seen: ReadonlySet<string>;
  /** The tokens of every answer line: Bedrock bills them, whether or not the call still needed one. */
  readonly billed: Usage;
}

/**
 * Joins a job's output lines to its calls on `recordId` (the service keeps no order). A line with an
 * error, or a record with no line, leaves its call to on-demand; an answer is read as the on-demand
 * provider reads a Converse response, so a judge's answer is validated with its schema.
 */
export async function joinBatchOutput(
  output: Iterable<string> | AsyncIterable<string>,
  calls: ReadonlyMap<string, BatchCall>,
  who: string,
): Promise<BatchJoin> {
  const answers = new Map<string, CachedCall>();
  const errored: { key: string; recordId: string; reason: string }[] = [];
  const seen = new Set<string>();
  const billed = { inputTokens: 0, outputTokens: 0 };
  let unreadable = 0;
  for await (const text of output) {
    if (!text.trim()) continue;
    let line: BatchOutputLine;
    try {
      line = BatchOutputLine.parse(JSON.parse(text));
    } catch {
      unreadable++;
      continue;
    }
    const response = BatchConverseResponse.safeParse(line.modelOutput);
    const first = !seen.has(line.recordId);
    seen.add(line.recordId);
    if (first && response.success) {
      billed.inputTokens += response.data.usage?.inputTokens ?? 0;
      billed.outputTokens += response.data.usage?.outputTokens ?? 0;
    }
    const call = calls.get(line.recordId);
    if (!call || !first) {
      unreadable++;
      continue;
    }
    if (line.error || !response.success) {
      const reason = line.error
        ? `${line.error.errorCode ?? 'error'}: ${line.error.errorMessage ?? 'no message'}`
        : 'the model output is not a Converse answer';
      errored.push({ key: call.key, recordId: line.recordId, reason });
      continue;
    }
    answers.set(call.key, converseAnswer(call.request, response.data, who, call.toolUse ?? true));
  }
  const missing = [...calls].filter(([recordId]) => !seen.has(recordId)).map(([, call]) => call.key);
  return { answers, errored, missing, unreadable, seen, billed };
}

/** The states a batch job ends or waits in. */
export const BATCH_JOB_STATUSES = [
  'Submitted',
  'Validating',
  'Scheduled',
  'InProgress',
  'Stopping',
  'Completed',
  'PartiallyCompleted',
  'Failed',
  'Stopped',
  'Expired',
] as const;
export type BatchJobStatus = (typeof BATCH_JOB_STATUSES)[number];

/**
 * What to do with a job in a state: wait while it runs; join what it wrote when it completed, even
 * partly; send every record on-demand when it failed, stopped or expired (its output, if any, is not
 * trusted).
 */
export function jobOutcome(status: BatchJobStatus): 'wait' | 'join' | 'on-demand' {
  if (status === 'Completed' || status === 'PartiallyCompleted') return 'join';
  if (status === 'Failed' || status === 'Stopped' || status === 'Expired') return 'on-demand';
  return 'wait';
}
