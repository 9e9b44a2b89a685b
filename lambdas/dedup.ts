import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { DedupInput } from '../lib/pipeline/schemas.js';
import { dedup } from '../lib/pipeline/stages/dedup.js';

/** Builds the dedup handler over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => StageDeps = defaultDeps) =>
  async (event: unknown) =>
    dedup(DedupInput.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
