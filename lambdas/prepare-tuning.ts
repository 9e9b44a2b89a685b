import { type Observed, observe } from '../lib/pipeline/observability.js';
import { defaultTuningDeps, type TuningDeps } from '../lib/tuning/deps.js';
import { prepareTuning } from '../lib/tuning/prepare.js';
import { PrepareTuningInput } from '../lib/tuning/schemas.js';

/** Builds the prepare-tuning handler over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<TuningDeps> = defaultTuningDeps) =>
  observe('prepare-tuning', deps, (event, d) => prepareTuning(PrepareTuningInput.parse(event), d));

/** The Lambda entry point. */
export const handler = createHandler();
