import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  BATCH_JOB_STATUSES,
  type BatchCall,
  batchInput,
  chunkCalls,
  jobIdentity,
  jobOutcome,
  joinBatchOutput,
  recordIdOf,
} from '../../lib/pipeline/batch/batch-job.js';
import { emulateBatchJob } from '../../lib/pipeline/batch/emulator.js';
import type { ConverseBody, ConverseResponse } from '../../lib/pipeline/models/converse-body.js';

const Verdict = z.object({ score: z.number().int().min(1).max(5), rationale: z.string() });

const generateCall = (i: number): BatchCall => ({
  key: `key-${i}`,
  request: { system: 'Write the instruction.', prompt: `text ${i}`, maxTokens: 64, temperature: 0.2 },
});
const judgeCall = (i: number): BatchCall => ({
  key: `judge-${i}`,
  request: {
    system: 'Judge.',
    prompt: `judge ${i}`,
    maxTokens: 64,
    temperature: 0,
    schema: Verdict,
    toolName: 'record_score',
    toolDescription: 'Records the score.',
  },
});

/** A deterministic model behind the emulator: echoes the prompt, or scores 4 through the forced tool. */
async function respond(body: ConverseBody): Promise<ConverseResponse> {
  const prompt = body.messages[0]?.content[0]?.text ?? '';
  const usage = { inputTokens: prompt.length, outputTokens: 3 };
  if (body.toolConfig) {
    const score = prompt.endsWith('bad') ? 9 : 4;
    return {
      output: {
        message: { content: [{ toolUse: { name: 'record_score', input: { score, rationale: 'fits' } } }] },
      },
      stopReason: 'tool_use',
      usage,
    };
  }
  return {
    output: { message: { content: [{ text: `answer to ${prompt}` }] } },
    stopReason: 'end_turn',
    usage,
  };
}

const lines = (jsonl: string) => jsonl.split('\n').filter(Boolean);

describe('batch job input', () => {
  it('writes one Converse body per call under an 11-character record id, forcing the judge tool', () => {
    // Act
    const { jsonl, calls } = batchInput([generateCall(0), judgeCall(1)]);

    // Assess
    const [first, second] = lines(jsonl).map((l) => JSON.parse(l));
    expect(first).toEqual({
      recordId: 'R0000000000',
      modelInput: {
        system: [{ text: 'Write the instruction.' }],
        messages: [{ role: 'user', content: [{ text: 'text 0' }] }],
        inferenceConfig: { maxTokens: 64, temperature: 0.2 },
      },
    });
    expect(second.recordId).toBe('R0000000001');
    expect(second.modelInput.toolConfig.toolChoice).toEqual({ tool: { name: 'record_score' } });
    expect(second.modelInput.toolConfig.tools[0].toolSpec.inputSchema.json.required).toEqual([
      'score',
      'rationale',
    ]);
    expect([...calls.keys()]).toEqual(['R0000000000', 'R0000000001']);
    expect(recordIdOf(50_000)).toHaveLength(11);
  });

  it('cuts calls into even jobs within the bounds, and leaves to on-demand what no job can take', () => {
    // Prepare
    const calls = Array.from({ length: 250 }, (_, i) => i);

    // Act
    const even = chunkCalls(calls, 100, 50);
    const fewer = chunkCalls(calls.slice(0, 130), 100, 80);
    const tooFew = chunkCalls(calls.slice(0, 30), 100, 50);

    // Assess
    expect(even.jobs.map((j) => j.length)).toEqual([84, 83, 83]);
    expect(even.jobs.flat()).toEqual(calls);
    expect(even.onDemand).toEqual([]);
    expect(fewer.jobs.map((j) => j.length)).toEqual([100]);
    expect(fewer.onDemand).toEqual(calls.slice(100, 130));
    expect(tooFew).toEqual({ jobs: [], onDemand: calls.slice(0, 30) });
    expect(() => chunkCalls(calls, 0, 0)).toThrow(RangeError);
    expect(() => chunkCalls(calls, 50, 100)).toThrow(RangeError);
  });

  it('names a job and its token after run, stage and calls, so a retried submit of the same calls reuses the token', () => {
    // Act
    const first = jobIdentity('run-1', 'induce', ['k1', 'k2']);
    const retried = jobIdentity('run-1', 'induce', ['k2', 'k1']);
    const next = jobIdentity('run-1', 'induce', ['k1', 'k3']);

    // Assess
    expect(retried).toEqual(first);
    expect(next.token).not.toBe(first.token);
    expect(first.jobName.length).toBeLessThanOrEqual(63);
    expect(first.jobName).toMatch(/^[a-zA-Z0-9](-*[a-zA-Z0-9+\-.])*$/);
    expect(first.token).toMatch(/^[a-zA-Z0-9](-*[a-zA-Z0-9])*$/);
  });
});

describe('joining a batch job output', () => {
  it('joins shuffled output on record id to the calls it answers, as on-demand would read them', async () => {
    // Prepare
    const calls = [...Array.from({ length: 6 }, (_, i) => generateCall(i)), judgeCall(6)];
    const { jsonl, calls: byRecord } = batchInput(calls);

    // Act
    const job = await emulateBatchJob(jsonl, respond, { seed: 'shuffle' });
    const join = await joinBatchOutput(lines(job.output), byRecord, 'bedrock m');

    // Assess
    const outputIds = lines(job.output).map((l) => JSON.parse(l).recordId);
    expect(outputIds).not.toEqual([...byRecord.keys()]);
    expect(job.status).toBe('Completed');
    expect(join.missing).toEqual([]);
    expect(join.errored).toEqual([]);
    expect(join.answers.get('key-3')).toEqual({
      kind: 'text',
      text: 'answer to text 3',
      usage: { inputTokens: 6, outputTokens: 3 },
    });
    expect(join.answers.get('judge-6')).toMatchObject({
      kind: 'answer',
      value: { score: 4, rationale: 'fits' },
    });
  });

  it('leaves missing, errored and empty records to on-demand, and reads an off-schema judge answer as invalid', async () => {
    // Prepare
    const bad: BatchCall = { ...judgeCall(3), request: { ...judgeCall(3).request, prompt: 'judge bad' } };
    const { jsonl, calls } = batchInput([generateCall(0), generateCall(1), generateCall(2), bad]);

    // Act
    const job = await emulateBatchJob(jsonl, respond, {
      errorRecordIds: new Set([recordIdOf(1)]),
      dropRecordIds: new Set([recordIdOf(2)]),
    });
    const empty = JSON.stringify({ recordId: recordIdOf(0), modelOutput: {} });
    const join = await joinBatchOutput(
      [empty, ...lines(job.output), 'not json', '{"recordId":"R9999999999"}'],
      calls,
      'm',
    );

    // Assess
    expect(job.status).toBe('PartiallyCompleted');
    // The empty output line came first and took record 0: an answer without content is not cached.
    // The empty output line takes record 0: an answer without content is not cached.
    expect([...join.answers.keys()].sort()).toEqual(['judge-3']);
    expect(join.answers.get('judge-3')).toMatchObject({ kind: 'invalid-answer' });
    expect(join.errored).toEqual([
      { key: 'key-0', recordId: recordIdOf(0), reason: 'the model output is not a Converse answer' },
      { key: 'key-1', recordId: recordIdOf(1), reason: '400: emulated record error' },
    ]);
    expect(join.missing).toEqual(['key-2']);
    // The job's own line for record 0 comes after the empty one: a second line for a record is not read.
    expect(join.unreadable).toBe(3);
  });

  it('counts the tokens of every answer line as billed, also of records the cache answered meanwhile', async () => {
    // Prepare
    const { jsonl, calls } = batchInput([generateCall(0), generateCall(1), generateCall(2)]);
    const job = await emulateBatchJob(jsonl, respond);
    const stillOpen = new Map([...calls].filter(([recordId]) => recordId !== recordIdOf(1)));

    // Act
    const join = await joinBatchOutput(lines(job.output), stillOpen, 'm');

    // Assess
    expect([...join.answers.keys()].sort()).toEqual(['key-0', 'key-2']);
    expect(join.missing).toEqual([]);
    expect([...join.seen].sort()).toEqual([recordIdOf(0), recordIdOf(1), recordIdOf(2)]);
    expect(join.billed).toEqual({ inputTokens: 18, outputTokens: 9 });
  });

  it('reads an answer a content filter withheld as a refusal, not as an error to pay again on-demand', async () => {
    // Prepare
    const { calls } = batchInput([generateCall(0)]);
    const line = JSON.stringify({
      recordId: recordIdOf(0),
      modelOutput: {
        output: { message: { role: 'assistant', content: [] } },
        stopReason: 'content_filtered',
        usage: { inputTokens: 5, outputTokens: 0 },
      },
    });

    // Act
    const join = await joinBatchOutput([line], calls, 'm');

    // Assess
    expect(join.errored).toEqual([]);
    expect(join.answers.get('key-0')).toEqual({
      kind: 'refused',
      message: 'm stopped with content_filtered',
      usage: { inputTokens: 5, outputTokens: 0 },
    });
  });

  it('joins what a completed or partly completed job wrote, and sends everything on-demand after a failure', () => {
    // Act
    const outcomes = Object.fromEntries(BATCH_JOB_STATUSES.map((s) => [s, jobOutcome(s)]));

    // Assess
    expect(outcomes).toEqual({
      Submitted: 'wait',
      Validating: 'wait',
      Scheduled: 'wait',
      InProgress: 'wait',
      Stopping: 'wait',
      Completed: 'join',
      PartiallyCompleted: 'join',
      Failed: 'on-demand',
      Stopped: 'on-demand',
      Expired: 'on-demand',
    });
  });
});
