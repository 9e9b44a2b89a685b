import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { ShardTask } from '../lib/pipeline/schemas.js';
import { filter } from '../lib/pipeline/stages/filter.js';

/** Builds the filter handler over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => StageDeps = defaultDeps) =>
  async (event: unknown) =>
    filter(ShardTask.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
