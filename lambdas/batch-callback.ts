import { type CallbackDeps, defaultCallbackDeps, releaseBatchJob } from '../lib/pipeline/batch/callback.js';
import { type Observed, observe } from '../lib/pipeline/observability.js';

/** Builds the batch-callback handler over the given dependencies; tests pass their own. */
export const createHandler = (deps: () => Observed<CallbackDeps> = defaultCallbackDeps) =>
  observe('batch-callback', deps, (event, d) => releaseBatchJob(event, d));

/** The Lambda entry point, for the rule on Bedrock's Batch Inference Job State Change events. */
export const handler = createHandler();
