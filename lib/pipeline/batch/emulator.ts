import { createHash } from 'node:crypto';
import { mapLimit } from '../models/calls.js';
import type { ConverseBody, ConverseResponse } from '../models/converse-body.js';
import { BatchInputLine, type BatchJobStatus } from './batch-job.js';

/** How the emulated job misbehaves, so the join and fallback paths run locally and in tests. */
export interface EmulatorOptions {
  /** Shuffles the output lines with this seed, as the service keeps no order. */
  readonly seed?: string;
  /** Records whose line carries an error instead of an answer. */
  readonly errorRecordIds?: ReadonlySet<string>;
  /** Records left out of the output altogether. */
  readonly dropRecordIds?: ReadonlySet<string>;
  /** Records answered at once, as the service runs many. */
  readonly concurrency?: number;
  /** The job's end state; default Completed, or PartiallyCompleted when a record errored. */
  readonly status?: BatchJobStatus;
}

/** A finished emulated job: its end state and the `.jsonl.out` it wrote. */
export interface EmulatedJob {
  readonly status: BatchJobStatus;
  readonly output: string;
}

/** A stable order of record ids for a seed: sorted by a hash of seed and id. */
const shuffled = <T extends { recordId: string }>(lines: T[], seed: string): T[] =>
  lines
    .map((line) => ({
      line,
      rank: createHash('sha256').update(`${seed}\u0000${line.recordId}`).digest('hex'),
    }))
    .sort((a, b) => (a.rank < b.rank ? -1 : 1))
    .map((x) => x.line);

/**
 * Runs a batch job locally: reads the job's input JSONL as Bedrock does, answers each `modelInput`
 * (a Converse request body) with `respond`, and writes the `.jsonl.out` the service would write:
 * `{recordId, modelInput, modelOutput}` per answer, `{recordId, modelInput, error}` in place of one, in
 * no particular order. A `respond` that throws makes an error line too.
 */
export async function emulateBatchJob(
  input: string,
  respond: (body: ConverseBody, recordId: string) => Promise<ConverseResponse>,
  options: EmulatorOptions = {},
): Promise<EmulatedJob> {
  const records = input
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => BatchInputLine.parse(JSON.parse(line)));
  let errors = 0;
  const answered = await mapLimit(records, options.concurrency ?? 8, async ({ recordId, modelInput }) => {
    if (options.dropRecordIds?.has(recordId)) return [];
    let error: { errorCode: number; errorMessage: string } | undefined;
    let modelOutput: ConverseResponse | undefined;
    if (options.errorRecordIds?.has(recordId))
      error = { errorCode: 400, errorMessage: 'emulated record error' };
    else
      try {
        modelOutput = await respond(modelInput as ConverseBody, recordId);
      } catch (e) {
        error = { errorCode: 500, errorMessage: (e as Error).message };
      }
    if (error) errors++;
    return [
      {
        recordId,
        text: JSON.stringify(error ? { recordId, modelInput, error } : { recordId, modelInput, modelOutput }),
      },
    ];
  });
  const ordered = shuffled(answered.flat(), options.seed ?? 'emulator');
  return {
    status: options.status ?? (errors > 0 ? 'PartiallyCompleted' : 'Completed'),
    output: ordered.map((l) => `${l.text}\n`).join(''),
  };
}
