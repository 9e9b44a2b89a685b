import { defaultTuningDeps, type TuningDeps } from '../lib/tuning/deps.js';
import { ServeModelInput } from '../lib/tuning/schemas.js';
import { serveModel } from '../lib/tuning/serve.js';

/** Builds the serve-model handler over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => TuningDeps = defaultTuningDeps) =>
  async (event: unknown) =>
    serveModel(ServeModelInput.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
