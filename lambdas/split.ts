import { defaultDeps, type StageDeps } from '../lib/pipeline/deps.js';
import { SplitInput } from '../lib/pipeline/schemas.js';
import { split } from '../lib/pipeline/stages/split.js';

/** Builds the split handler over the given dependencies; the local engine passes its own. */
export const createHandler =
  (deps: () => StageDeps = defaultDeps) =>
  async (event: unknown) =>
    split(SplitInput.parse(event), deps());

/** The Lambda entry point. */
export const handler = createHandler();
