import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { type Observed, observe } from '../lib/pipeline/observability.js';
import { ShardTask } from '../lib/pipeline/schemas.js';
import { evaluate } from '../lib/pipeline/stages/evaluate.js';

/** Builds the evaluate handler over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<StageDeps> = defaultDeps) =>
  observe('evaluate', deps, (event, d) => evaluate(ShardTask.parse(event), d));

/** The Lambda entry point. */
export const handler = createHandler();
