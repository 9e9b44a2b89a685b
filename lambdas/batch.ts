import { BatchTask, batchStep } from '../lib/pipeline/batch/batch-stage.js';
import { defaultBatchDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { type Observed, observe } from '../lib/pipeline/observability.js';

/** Builds the batch handler (plan, submit, join) over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<StageDeps> = defaultBatchDeps) =>
  observe('batch', deps, (event, d) => batchStep(BatchTask.parse(event), d));

/** The Lambda entry point. */
export const handler = createHandler();
