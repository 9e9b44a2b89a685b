import { type Observed, observe } from '../lib/pipeline/observability.js';
import { defaultTuningDeps, type TuningDeps } from '../lib/tuning/deps.js';
import { ServeModelInput } from '../lib/tuning/schemas.js';
import { serveModel } from '../lib/tuning/serve.js';

/** Builds the serve-model handler over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<TuningDeps> = defaultTuningDeps) =>
  observe('serve-model', deps, (event, d) => serveModel(ServeModelInput.parse(event), d));

/** The Lambda entry point. */
export const handler = createHandler();
