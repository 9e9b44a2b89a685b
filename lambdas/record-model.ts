import { type Observed, observe } from '../lib/pipeline/observability.js';
import { defaultTuningDeps, type TuningDeps } from '../lib/tuning/deps.js';
import { recordModel } from '../lib/tuning/record.js';
import { RecordModelInput } from '../lib/tuning/schemas.js';

/** Builds the record-model handler over the given dependencies; the local engine passes its own. */
export const createHandler = (deps: () => Observed<TuningDeps> = defaultTuningDeps) =>
  observe('record-model', deps, (event, d) => recordModel(RecordModelInput.parse(event), d));

/** The Lambda entry point. */
export const handler = createHandler();
