import type { z } from 'zod';
import { shardKey, shardStatsKey } from '../keys.js';
import { type Reject, type ShardStage, type StageName, StageStats } from '../schemas.js';
import type { Store } from '../store/store.js';

const safeJson = (text: string): unknown => {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
};

/**
 * The stats of a shard's stage when it finished: a stage is complete exactly when its stats exist.
 * Stats cut short (a power loss before the disk caught up) count as absent, so the stage runs again.
 */
export async function finishedStats(
  store: Store,
  runId: string,
  shard: string,
  stage: StageName,
): Promise<StageStats | undefined> {
  const parsed = StageStats.safeParse(
    safeJson((await store.tryGet(shardStatsKey(runId, shard, stage))) ?? ''),
  );
  return parsed.success ? parsed.data : undefined;
}

/**
 * Reads the records a shard stage takes in from the stage before it. A line its schema refuses
 * becomes a `corrupt-record` reject of `stage`, not a failure of the shard.
 */
export async function readShardRecords<I>(
  store: Store,
  task: { runId: string; shard: string },
  stage: ShardStage,
  from: StageName,
  schema: z.ZodType<I>,
): Promise<{ lines: number; records: I[]; rejects: Reject[] }> {
  const lines = (await store.get(shardKey(task.runId, task.shard, from))).split('\n').filter((l) => l.trim());
  const records: I[] = [];
  const rejects: Reject[] = [];
  for (const [index, text] of lines.entries()) {
    const result = schema.safeParse(safeJson(text));
    if (result.success) records.push(result.data);
    else
      rejects.push({
        id: (safeJson(text) as { id?: string } | undefined)?.id ?? `${task.shard}:${index + 1}`,
        stage,
        reason: 'corrupt-record',
        detail: result.error.message.slice(0, 300),
        source: from,
        line: null,
      });
  }
  return { lines: lines.length, records, rejects };
}
