import * as dedup from '../../lambdas/dedup.js';
import * as evaluate from '../../lambdas/evaluate.js';
import * as filter from '../../lambdas/filter.js';
import * as induce from '../../lambdas/induce.js';
import * as merge from '../../lambdas/merge.js';
import * as respond from '../../lambdas/respond.js';
import * as split from '../../lambdas/split.js';
import type { StageDeps } from '../pipeline/deps.js';

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
};
