import { type CallbackDeps, defaultCallbackDeps, releaseBatchJob } from '../lib/pipeline/batch/callback.js';

/** Builds the batch-callback handler over the given dependencies; tests pass their own. */
export const createHandler =
  (deps: () => CallbackDeps = defaultCallbackDeps) =>
  async (event: unknown) =>
    releaseBatchJob(event, deps());

/** The Lambda entry point, for the rule on Bedrock's Batch Inference Job State Change events. */
export const handler = createHandler();
