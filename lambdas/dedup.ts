import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { type Observed, observe } from '../lib/pipeline/observability.js';
import { DedupInput } from '../lib/pipeline/schemas.js';
import { dedup } from '../lib/pipeline/stages/dedup.js';

/** Builds the dedup handler over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<StageDeps> = defaultDeps) =>
  observe('dedup', deps, (event, d) => dedup(DedupInput.parse(event), d));

/** The Lambda entry point. */
export const handler = createHandler();
