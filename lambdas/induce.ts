import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { ShardTask } from '../lib/pipeline/schemas.js';
import { induce } from '../lib/pipeline/stages/induce.js';

/** Builds the induce handler over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => StageDeps = defaultDeps) =>
  async (event: unknown) =>
    induce(ShardTask.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
