import type { StageDeps } from '../deps.js';
import type { CallCache } from '../models/call-cache.js';
import { mapLimit } from '../models/calls.js';
import type { ShardResult, ShardTask } from '../schemas.js';
import type { BatchCall, BatchJoin } from './batch-job.js';

/**
 * The calls a model stage would pay for over these shards, collected instead of made: each call the
 * cache cannot answer, once (shards asking the same call share its answer), with the first shard that
 * asks it. Nothing is paid or written.
 */
export async function collectStageCalls(
  stage: (task: ShardTask, deps: StageDeps) => Promise<ShardResult>,
  tasks: readonly ShardTask[],
  deps: StageDeps,
): Promise<(BatchCall & { readonly shard: string })[]> {
  const calls = new Map<string, BatchCall & { shard: string }>();
  for (const task of tasks)
    await stage(task, {
      ...deps,
      collect: (call) => {
        if (!calls.has(call.key)) calls.set(call.key, { ...call, shard: task.shard });
      },
    });
  return [...calls.values()];
}

/**
 * Puts a batch job's answers into the call cache, marked as paid by the job: the stage then finds
 * them, and its own stats count them as cache hits, not as calls it paid for. An entry already there
 * (a call a shard paid on-demand meanwhile) is kept, with the record of who paid for it.
 */
export async function cacheBatchAnswers(join: BatchJoin, cache: CallCache, jobName: string): Promise<void> {
  await mapLimit([...join.answers], 16, async ([key, entry]) => {
    if ((await cache.get(key)) === undefined)
      await cache.put(key, { ...entry, paidBy: { execution: `batch:${jobName}`, shard: 'batch' } });
  });
}
