import type { StageName } from './schemas.js';

/** Where everything of one run lives in the store: the same keys in S3 and on disk. */
export const runPrefix = (runId: string) => `runs/${runId}`;
export const configKey = (runId: string) => `${runPrefix(runId)}/config.json`;
export const markerKey = (runId: string) => `${runPrefix(runId)}/run.json`;
export const manifestKey = (runId: string) => `${runPrefix(runId)}/manifest.json`;
export const splitRejectsKey = (runId: string) => `${runPrefix(runId)}/split.rejects.jsonl`;
export const splitStatsKey = (runId: string) => `${runPrefix(runId)}/split.stats.json`;
export const shardKey = (runId: string, shard: string, stage: StageName) =>
  `${runPrefix(runId)}/shards/${shard}/${stage}.jsonl`;
export const shardRejectsKey = (runId: string, shard: string, stage: StageName) =>
  `${runPrefix(runId)}/shards/${shard}/${stage}.rejects.jsonl`;
export const shardStatsKey = (runId: string, shard: string, stage: StageName) =>
  `${runPrefix(runId)}/shards/${shard}/${stage}.stats.json`;
/** A run's output file: pairs.jsonl, rejects.jsonl, report.json and the exports. */
export const outputKey = (runId: string, file: string) => `${runPrefix(runId)}/output/${file}`;

/** Answered model calls, by content address, shared by every run in the bucket. */
export const CALL_CACHE_PREFIX = 'cache/calls/';

/** Uploads under this prefix start a run. */
export const INCOMING_PREFIX = 'incoming/';

/** Formats a shard number as its five-digit id. */
export const shardId = (n: number) => String(n).padStart(5, '0');
