import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { ShardTask } from '../lib/pipeline/schemas.js';
import { evaluate } from '../lib/pipeline/stages/evaluate.js';

/** Builds the evaluate handler over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => StageDeps = defaultDeps) =>
  async (event: unknown) =>
    evaluate(ShardTask.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
