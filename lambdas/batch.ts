import { BatchTask, batchStep } from '../lib/pipeline/batch/batch-stage.js';
import { defaultBatchDeps, type StageDeps } from '../lib/pipeline/deps.js';

/** Builds the batch handler (plan, submit, join) over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => StageDeps = defaultBatchDeps) =>
  async (event: unknown) =>
    batchStep(BatchTask.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
