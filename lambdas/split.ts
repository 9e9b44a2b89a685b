import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { type Observed, observe } from '../lib/pipeline/observability.js';
import { SplitInput } from '../lib/pipeline/schemas.js';
import { split } from '../lib/pipeline/stages/split.js';

/** Builds the split handler over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<StageDeps> = defaultDeps) =>
  observe('split', deps, (event, d) => split(SplitInput.parse(event), d));

/** The Lambda entry point. */
export const handler = createHandler();
