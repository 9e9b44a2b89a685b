import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { MergeInput } from '../lib/pipeline/schemas.js';
import { merge } from '../lib/pipeline/stages/merge.js';

/** Builds the merge handler over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => StageDeps = defaultDeps) =>
  async (event: unknown) =>
    merge(MergeInput.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
