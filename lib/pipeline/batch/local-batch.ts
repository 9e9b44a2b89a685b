import { basename } from 'node:path';
import { z } from 'zod';
import { JudgeAnswerError, ModelRefusedError } from '../errors.js';
import type { ConverseResponse } from '../models/converse-body.js';
import type { ModelClient } from '../models/model-client.js';
import type { Store } from '../store/store.js';
import { BATCH_JOB_STATUSES, type BatchCall } from './batch-job.js';
import { type BatchJobSpec, type BatchJobState, type BatchService, batchKey } from './batch-service.js';
import { type EmulatorOptions, emulateBatchJob } from './emulator.js';

/** The emulator's job state, kept as `emulated.json` beside the job's input. */
const EmulatedState = z.object({ status: z.enum(BATCH_JOB_STATUSES), outputKey: z.string() });

/**
 * Runs batch jobs on this machine with the local emulator: each record is answered by the stage's
 * model client (the in-process model, or any other), written back as the Converse response Bedrock would
 * write, in the `.jsonl.out` format, shuffled, under the key Bedrock would use. A job ends at submit, so
 * the workflow's wait on it returns at once; a job submitted again is not run again.
 */
export class LocalBatchService implements BatchService {
  readonly waitsForCallback = false;
  readonly scope = 'local';
  readonly emulated = true;

  constructor(
    private readonly store: Store,
    /** The model behind a job's model id: the stage's own client. */
    private readonly model: (job: BatchJobSpec) => Promise<ModelClient>,
    /** How a job misbehaves, per job (tests). */
    private readonly options: (job: BatchJobSpec) => EmulatorOptions = () => ({}),
  ) {}

  accepts(): boolean {
    return true;
  }

  async submit(
    job: BatchJobSpec,
    _taskToken: string,
    calls: () => Promise<ReadonlyMap<string, BatchCall>>,
  ): Promise<BatchJobState> {
    const ran = await this.state(job);
    if (ran.status !== 'NotSubmitted') return ran;
    const [model, input, open] = await Promise.all([this.model(job), this.store.get(job.inputKey), calls()]);
    // Each body is answered from the call behind its record, whose judge schema a body does not carry.
    const result = await emulateBatchJob(
      input,
      async (_body, recordId): Promise<ConverseResponse> => {
        const call = open.get(recordId);
        if (!call) throw new Error(`record ${recordId} needs no answer any more`);
        return answerAsConverse(model, call.request);
      },
      { seed: job.token, ...this.options(job) },
    );
    const outputKey = `${job.outputPrefix}${job.jobName}/${basename(job.inputKey)}.out`;
    await this.store.put(outputKey, result.output, { intermediate: true });
    const state = { status: result.status, outputKey };
    await this.store.put(emulatedKey(job), JSON.stringify(state), { intermediate: true });
    return state;
  }

  async state(job: BatchJobSpec): Promise<BatchJobState> {
    const kept = await this.store.tryGet(emulatedKey(job));
    return kept === undefined ? { status: 'NotSubmitted' } : EmulatedState.parse(JSON.parse(kept));
  }

  async stop(): Promise<void> {}
}

const emulatedKey = (job: BatchJobSpec) => batchKey(job.runId, job.stage, job.jobName, 'emulated.json');

/** A model client's answer as the Converse response body a batch job writes. */
async function answerAsConverse(
  model: ModelClient,
  request: Parameters<ModelClient['generate']>[0] | Parameters<ModelClient['judge']>[0],
): Promise<ConverseResponse> {
  try {
    if ('schema' in request) {
      const { value, usage } = await model.judge(request);
      return {
        output: { message: { content: [{ toolUse: { name: request.toolName, input: value } }] } },
        stopReason: 'tool_use',
        usage,
      };
    }
    const { text, usage } = await model.generate(request);
    return { output: { message: { content: [{ text }] } }, stopReason: 'end_turn', usage };
  } catch (error) {
    if (error instanceof ModelRefusedError)
      return { output: { message: { content: [] } }, stopReason: 'content_filtered', usage: error.usage };
    if (error instanceof JudgeAnswerError)
      return {
        output: { message: { content: [{ text: error.message }] } },
        stopReason: 'end_turn',
        usage: error.usage,
      };
    throw error;
  }
}
