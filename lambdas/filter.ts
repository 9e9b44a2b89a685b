import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { type Observed, observe } from '../lib/pipeline/observability.js';
import { ShardTask } from '../lib/pipeline/schemas.js';
import { filter } from '../lib/pipeline/stages/filter.js';

/** Builds the filter handler over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<StageDeps> = defaultDeps) =>
  observe('filter', deps, (event, d) => filter(ShardTask.parse(event), d));

/** The Lambda entry point. */
export const handler = createHandler();
