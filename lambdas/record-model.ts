import { defaultTuningDeps, type TuningDeps } from '../lib/tuning/deps.js';
import { recordModel } from '../lib/tuning/record.js';
import { RecordModelInput } from '../lib/tuning/schemas.js';

/** Builds the record-model handler over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => TuningDeps = defaultTuningDeps) =>
  async (event: unknown) =>
    recordModel(RecordModelInput.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
