import * as batch from '../../lambdas/batch.js';
import * as dedup from '../../lambdas/dedup.js';
import * as evaluate from '../../lambdas/evaluate.js';
import * as filter from '../../lambdas/filter.js';
import * as induce from '../../lambdas/induce.js';
import * as merge from '../../lambdas/merge.js';
import * as prepareTuning from '../../lambdas/prepare-tuning.js';
import * as recordModel from '../../lambdas/record-model.js';
import * as respond from '../../lambdas/respond.js';
import * as serveModel from '../../lambdas/serve-model.js';
import * as split from '../../lambdas/split.js';
import type { StageDeps } from '../pipeline/deps.js';
import type { TuningDeps } from '../tuning/deps.js';

type HandlerModule = { createHandler(deps: () => StageDeps): (event: unknown) => Promise<unknown> };

/** The Lambda handler module of each stage, by the STAGE its function is deployed with. */
export const STAGE_HANDLERS: Readonly<Record<string, HandlerModule>> = {
  split,
  dedup,
  induce,
  filter,
  respond,
  evaluate,
  merge,
  batch,
};

/** Functions of the stack that no state of the pipeline definition invokes: EventBridge calls them. */
export const EVENT_HANDLED_STAGES: ReadonlySet<string> = new Set(['batch-callback']);

type TuningHandlerModule = { createHandler(deps: () => TuningDeps): (event: unknown) => Promise<unknown> };

/** The Lambda handler module of each ReverseTuning step, by the STAGE its function is deployed with. */
export const TUNING_HANDLERS: Readonly<Record<string, TuningHandlerModule>> = {
  'prepare-tuning': prepareTuning,
  'serve-model': serveModel,
  'record-model': recordModel,
};
