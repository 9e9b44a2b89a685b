import type { z } from 'zod';
import { parseConfig } from '../config.js';
import type { StageDeps } from '../deps.js';
import { configKey, manifestKey, shardKey, shardRejectsKey, shardStatsKey } from '../keys.js';
import { emptyStats } from '../ledger.js';
import { NearDuplicateIndex } from '../quality/near-duplicates.js';
import { dedupKey } from '../records.js';
import {
  type DedupInput,
  type DedupResult,
  InducedRecord,
  InputRecord,
  inputStageOf,
  Manifest,
  type Reject,
  type ShardStage,
  type StageStats,
} from '../schemas.js';
import { toJsonl } from '../store/store.js';
import { finishedStats, readShardRecords } from './shard-io.js';

/** What each dedup pass reads, and how it names what it finds. */
const PASSES = {
  text: { stage: 'dedup-texts', schema: InputRecord, noun: 'text' },
  instruction: { stage: 'dedup-instructions', schema: InducedRecord, noun: 'instruction' },
} as const satisfies Record<DedupInput['field'], { stage: ShardStage; schema: unknown; noun: string }>;

const linesOf = (text: string) => text.split('\n').filter((line) => line.trim());

/**
 * A global dedup pass over every shard of a run: input texts before induce, induced instructions after
 * it. A record whose field equals (after normalization) or nearly equals (MinHash + LSH at the
 * configured Jaccard threshold) that of a record kept earlier, in shard and line order, goes to the
 * rejects with the id it duplicates.
 *
 * Incremental and stable, so a resumed or redriven run stays consistent: shards deduplicated before
 * keep their results and only seed the index, and a shard whose previous stage has not finished (it
 * failed) is left for a later run. Its records are then compared against everything kept so far.
 */
export async function dedup(input: DedupInput, deps: StageDeps): Promise<DedupResult> {
  const { store } = deps;
  const { runId, field } = input;
  const { stage, schema, noun } = PASSES[field];
  const from = inputStageOf(stage);
  const manifest = Manifest.parse(JSON.parse(await store.get(manifestKey(runId))));
  const config = parseConfig(JSON.parse(await store.get(configKey(runId))), `run ${runId} config`);
  const { nearDuplicateThreshold, minhashPermutations, shingleSize } = config.quality;

  const exact = new Map<string, string>();
  const near = new NearDuplicateIndex<string>({
    threshold: nearDuplicateThreshold,
    permutations: minhashPermutations,
    shingleSize,
  });
  const fieldOf = (record: InputRecord) =>
    field === 'text' ? record.text : (record as InducedRecord).instruction;
  const ready = new Set<string>();
  let records = 0;

  // Shards deduplicated before seed the index first, so a late shard is compared with all of them.
  const pending: string[] = [];
  for (const { shard } of manifest.shards) {
    const done = await finishedStats(store, runId, shard, stage);
    if (!done) {
      pending.push(shard);
      continue;
    }
    for (const line of linesOf(await store.get(shardKey(runId, shard, stage)))) {
      const record = schema.parse(JSON.parse(line));
      const value = fieldOf(record);
      exact.set(dedupKey(value), record.id);
      near.add(value, record.id);
    }
    ready.add(shard);
    records += done.out;
  }

  for (const shard of pending) {
    if (from !== 'split' && !(await finishedStats(store, runId, shard, from))) continue;
    const started = Date.now();
    const read = await readShardRecords(
      store,
      { runId, shard },
      stage,
      from,
      schema as z.ZodType<InputRecord>,
    );
    const kept: unknown[] = [];
    const rejects: Reject[] = read.rejects;
    for (const record of read.records) {
      const value = fieldOf(record);
      const reject = (reason: string, detail: string, duplicateOf: string) =>
        rejects.push({
          id: record.id,
          stage,
          reason,
          detail,
          source: record.source,
          line: record.line,
          duplicateOf,
        });
      const key = dedupKey(value);
      const same = exact.get(key);
      if (same !== undefined) {
        reject(`duplicate-${noun}`, `same ${noun} as ${same}`, same);
        continue;
      }
      const similar = near.claim(value, record.id);
      if (similar) {
        reject(
          `near-duplicate-${noun}`,
          `${noun} ${Math.round(similar.similarity * 100)}% similar to ${similar.value}'s`,
          similar.value,
        );
        continue;
      }
      exact.set(key, record.id);
      kept.push(record);
    }
    const stats: StageStats = {
      ...emptyStats(),
      in: read.lines,
      out: kept.length,
      rejected: rejects.length,
      ms: Date.now() - started,
    };
    await store.put(shardKey(runId, shard, stage), toJsonl(kept), { intermediate: true });
    await store.put(shardRejectsKey(runId, shard, stage), toJsonl(rejects), { intermediate: true });
    // Written last: a shard stage is complete exactly when its stats exist.
    await store.put(shardStatsKey(runId, shard, stage), JSON.stringify(stats), { intermediate: true });
    ready.add(shard);
    records += kept.length;
  }
  return { runId, shards: manifest.shards.map((s) => s.shard).filter((s) => ready.has(s)), records };
}
