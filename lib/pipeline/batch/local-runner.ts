import { JudgeAnswerError, ModelRefusedError } from '../errors.js';
import type { ConverseResponse } from '../models/converse-body.js';
import type { ModelClient } from '../models/model-client.js';
import type { Store } from '../store/store.js';
import type { BatchJobResult, BatchJobSpec, BatchRunner } from './batch-stage.js';
import { type EmulatorOptions, emulateBatchJob } from './emulator.js';

/**
 * Runs batch jobs on this machine with the local emulator: each record is answered by the stage's
 * model client (the in-process model, or any other), written back as the Converse response Bedrock would
 * write, in the `.jsonl.out` format, shuffled. The job's input and output are kept in the store under
 * the same keys as in S3.
 */
export class LocalBatchRunner implements BatchRunner {
  constructor(
    private readonly store: Store,
    /** The model behind a job's model id: the stage's own client. */
    private readonly model: (modelId: string) => Promise<ModelClient>,
    private readonly options: EmulatorOptions = {},
  ) {}

  async run(job: BatchJobSpec): Promise<BatchJobResult> {
    const model = await this.model(job.modelId);
    const input = await this.store.get(job.inputKey);
    // Each body is answered from the call behind its record, whose judge schema a body does not carry.
    const result = await emulateBatchJob(
      input,
      async (_body, recordId): Promise<ConverseResponse> => {
        const call = job.calls.get(recordId);
        if (!call) throw new Error(`record ${recordId} of the input has no call`);
        return answerAsConverse(model, call.request);
      },
      { seed: job.token, ...this.options },
    );
    await this.store.put(`${job.outputPrefix}${job.jobName}/input.jsonl.out`, result.output, {
      intermediate: true,
    });
    return { status: result.status, output: result.output.split('\n') };
  }
}

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
