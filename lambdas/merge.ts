import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { type Observed, observe, withCompletion } from '../lib/pipeline/observability.js';
import { MergeInput } from '../lib/pipeline/schemas.js';
import { merge } from '../lib/pipeline/stages/merge.js';

/** Builds the merge handler over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<StageDeps> = defaultDeps) =>
  // The completion figures ride on Merge's output: the completion event reads them there.
  observe('merge', deps, async (event, d) =>
    withCompletion(await merge(MergeInput.parse(event), d), d.store),
  );

/** The Lambda entry point. */
export const handler = createHandler();
