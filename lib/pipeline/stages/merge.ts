import { createInterface } from 'node:readline';
import { parseConfig } from '../config.js';
import type { StageDeps } from '../deps.js';
import { AccountingError } from '../errors.js';
import {
  configKey,
  manifestKey,
  outputKey,
  shardKey,
  shardRejectsKey,
  shardStatsKey,
  splitRejectsKey,
  splitStatsKey,
} from '../keys.js';
import { addStats, emptyStats } from '../ledger.js';
import { templateFor, templateHash } from '../prompts/templates.js';
import {
  Manifest,
  type MergeInput,
  type MergeResult,
  MODEL_STAGES,
  type Pair,
  Reject,
  RespondedRecord,
  type StageName,
  StageStats,
} from '../schemas.js';
import { jsonlChunks } from '../store/store.js';

const parseLines = (text: string): unknown[] =>
  text
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line));

type Located = { id: string; source: string; line: number };

/** Reads a JSONL object line by line, never whole: the split rejects of a large input can be large. */
async function* storeLines(store: StageDeps['store'], key: string): AsyncGenerator<string> {
  const lines = createInterface({
    input: (await store.getStream(key)).setEncoding('utf8'),
    crlfDelay: Number.POSITIVE_INFINITY,
  });
  for await (const line of lines) if (line.trim()) yield line;
}

/** The pair a verified record becomes. */
export const toPair = (record: RespondedRecord): Pair => ({
  id: record.id,
  prompt: record.instruction,
  chosen: record.chosen,
  rejected: record.text,
  category: record.category,
  metadata: { source: record.source, line: record.line, stages: record.trace, input: record.meta },
});

/**
 * The last stage: gathers every shard's pairs and rejects into the run's outputs, turns the
 * records of failed shards into rejects, checks that every input record is accounted for exactly
 * once, and writes report.json. Outputs are streamed: only one shard is held in memory at a time.
 */
export async function merge(input: MergeInput, deps: StageDeps): Promise<MergeResult> {
  const { store } = deps;
  const { runId } = input;
  const manifest = Manifest.parse(JSON.parse(await store.get(manifestKey(runId))));
  const config = parseConfig(JSON.parse(await store.get(configKey(runId))), `run ${runId} config`);
  const failures = new Map(
    input.shardResults.flatMap((r) => ('failed' in r ? [[r.shard, r.error] as const] : [])),
  );

  const stats: Record<StageName, StageStats> = {
    split: StageStats.parse(JSON.parse(await store.get(splitStatsKey(runId)))),
    induce: emptyStats(),
    filter: emptyStats(),
    respond: emptyStats(),
    evaluate: emptyStats(),
  };
  const failedShards: { shard: string; stage: StageName; error: string }[] = [];
  const completeShards: string[] = [];
  const rejectsByStage: Record<string, Record<string, number>> = {};
  const seen = new Set<string>();
  const count = (id: string) => {
    if (seen.has(id)) throw new AccountingError(`run ${runId}: record ${id} is counted twice`);
    seen.add(id);
  };
  let rejectCount = 0;
  const counted = (reject: Reject): Reject => {
    count(reject.id);
    rejectCount++;
    const byReason = rejectsByStage[reject.stage] ?? {};
    byReason[reject.reason] = (byReason[reject.reason] ?? 0) + 1;
    rejectsByStage[reject.stage] = byReason;
    return reject;
  };

  /** Every reject of the run, in stage order per shard; on the way, checks each shard's books. */
  async function* allRejects(): AsyncGenerator<Reject> {
    for await (const line of storeLines(store, splitRejectsKey(runId)))
      yield counted(Reject.parse(JSON.parse(line)));
    for (const { shard } of manifest.shards) {
      let survivors = parseLines(await store.get(shardKey(runId, shard, 'split'))) as Located[];
      let complete = true;
      for (const stage of MODEL_STAGES) {
        const stageStats = await store.tryGet(shardStatsKey(runId, shard, stage));
        if (stageStats === undefined) {
          const error = failures.get(shard) ?? 'ShardIncomplete';
          failedShards.push({ shard, stage, error });
          for (const { id, source, line } of survivors)
            yield counted({
              id,
              stage,
              reason: 'shard-failed',
              detail: `${error} in ${stage}`,
              source,
              line,
            });
          complete = false;
          break;
        }
        stats[stage] = addStats(stats[stage], StageStats.parse(JSON.parse(stageStats)));
        const expected = survivors.length;
        const before = new Set(survivors.map((r) => r.id));
        const rejected = parseLines(await store.get(shardRejectsKey(runId, shard, stage))).map((r) =>
          Reject.parse(r),
        );
        survivors = parseLines(await store.get(shardKey(runId, shard, stage))) as Located[];
        const after = [...rejected, ...survivors];
        if (after.length !== before.size || after.some((r) => !before.delete(r.id)))
          throw new AccountingError(
            `run ${runId}: shard ${shard} ${stage} took in ${expected} records but put out ${after.length} ` +
              `(${rejected.length} rejects, ${survivors.length} kept) or not the same ones`,
          );
        for (const reject of rejected) yield counted(reject);
      }
      if (complete) {
        for (const { id } of survivors) count(id);
        completeShards.push(shard);
      }
    }
  }

  /** The pairs of the complete shards. */
  async function* allPairs(): AsyncGenerator<Pair> {
    for (const shard of completeShards)
      for (const record of parseLines(await store.get(shardKey(runId, shard, 'evaluate'))))
        yield toPair(RespondedRecord.parse(record));
  }

  const keys = {
    pairsKey: outputKey(runId, 'pairs.jsonl'),
    rejectsKey: outputKey(runId, 'rejects.jsonl'),
    reportKey: outputKey(runId, 'report.json'),
  };
  await store.putStream(keys.rejectsKey, jsonlChunks(allRejects()));
  const pairCount = seen.size - rejectCount;
  if (seen.size !== manifest.records)
    throw new AccountingError(
      `run ${runId}: ${manifest.records} records came in but ${pairCount} pairs + ${rejectCount} rejects went out`,
    );
  await store.putStream(keys.pairsKey, jsonlChunks(allPairs()));

  const totals = Object.values(stats).reduce(addStats, emptyStats());
  const report = {
    runId,
    input: { key: manifest.inputKey, etag: manifest.etag, records: manifest.records },
    startedAt: manifest.startedAt,
    finishedAt: (deps.now?.() ?? new Date()).toISOString(),
    pairs: pairCount,
    rejects: rejectCount,
    stages: stats,
    totals: {
      calls: totals.calls,
      inputTokens: totals.inputTokens,
      outputTokens: totals.outputTokens,
      costUsd: totals.costUsd,
      cacheHits: totals.cacheHits,
      cacheMisses: totals.cacheMisses,
      throttled: totals.throttled,
      retries: totals.retries,
    },
    rejectsByStage,
    failedShards,
    models: config.models,
    templates: Object.fromEntries(
      MODEL_STAGES.map((s) => [s, templateHash(templateFor(s, config.stages[s].template))]),
    ),
    accounting: {
      inputRecords: manifest.records,
      pairs: pairCount,
      rejects: rejectCount,
      balanced: true,
    },
  };
  await store.put(keys.reportKey, `${JSON.stringify(report, null, 2)}\n`);
  return { runId, pairs: pairCount, rejects: rejectCount, ...keys };
}
