import { defaultTuningDeps, type TuningDeps } from '../lib/tuning/deps.js';
import { prepareTuning } from '../lib/tuning/prepare.js';
import { PrepareTuningInput } from '../lib/tuning/schemas.js';

/** Builds the prepare-tuning handler over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => TuningDeps = defaultTuningDeps) =>
  async (event: unknown) =>
    prepareTuning(PrepareTuningInput.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
