import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { type Observed, observe } from '../lib/pipeline/observability.js';
import { ShardTask } from '../lib/pipeline/schemas.js';
import { induce } from '../lib/pipeline/stages/induce.js';

/** Builds the induce handler over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<StageDeps> = defaultDeps) =>
  observe('induce', deps, (event, d) => induce(ShardTask.parse(event), d));

/** The Lambda entry point. */
export const handler = createHandler();
