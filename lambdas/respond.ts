import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { ShardTask } from '../lib/pipeline/schemas.js';
import { respond } from '../lib/pipeline/stages/respond.js';

/** Builds the respond handler over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => StageDeps = defaultDeps) =>
  async (event: unknown) =>
    respond(ShardTask.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
