import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { type Observed, observe } from '../lib/pipeline/observability.js';
import { ShardTask } from '../lib/pipeline/schemas.js';
import { respond } from '../lib/pipeline/stages/respond.js';

/** Builds the respond handler over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<StageDeps> = defaultDeps) =>
  observe('respond', deps, (event, d) => respond(ShardTask.parse(event), d));

/** The Lambda entry point. */
export const handler = createHandler();
