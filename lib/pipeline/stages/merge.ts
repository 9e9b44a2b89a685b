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

const parseLines = (text: string): unknown[] =>
  text
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line));

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
 * once, and writes report.json.
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
  const rejects: Reject[] = parseLines(await store.get(splitRejectsKey(runId))).map((r) => Reject.parse(r));
  const pairs: Pair[] = [];
  const failedShards: { shard: string; stage: StageName; error: string }[] = [];

  for (const { shard } of manifest.shards) {
    let survivors = parseLines(await store.get(shardKey(runId, shard, 'split')));
    let complete = true;
    for (const stage of MODEL_STAGES) {
      const stageStats = await store.tryGet(shardStatsKey(runId, shard, stage));
      if (stageStats === undefined) {
        const error = failures.get(shard) ?? 'ShardIncomplete';
        failedShards.push({ shard, stage, error });
        for (const record of survivors) {
          const { id, source, line } = record as { id: string; source: string; line: number };
          rejects.push({ id, stage, reason: 'shard-failed', detail: `${error} in ${stage}`, source, line });
        }
        complete = false;
        break;
      }
      stats[stage] = addStats(stats[stage], StageStats.parse(JSON.parse(stageStats)));
      for (const r of parseLines(await store.get(shardRejectsKey(runId, shard, stage))))
        rejects.push(Reject.parse(r));
      survivors = parseLines(await store.get(shardKey(runId, shard, stage)));
    }
    if (complete) for (const record of survivors) pairs.push(toPair(RespondedRecord.parse(record)));
  }

  const seen = new Set<string>();
  for (const { id } of [...pairs, ...rejects]) {
    if (seen.has(id)) throw new AccountingError(`run ${runId}: record ${id} is counted twice`);
    seen.add(id);
  }
  if (seen.size !== manifest.records)
    throw new AccountingError(
      `run ${runId}: ${manifest.records} records came in but ${pairs.length} pairs + ${rejects.length} rejects went out`,
    );

  const rejectsByStage: Record<string, Record<string, number>> = {};
  for (const r of rejects) {
    const byReason = rejectsByStage[r.stage] ?? {};
    byReason[r.reason] = (byReason[r.reason] ?? 0) + 1;
    rejectsByStage[r.stage] = byReason;
  }
  const totals = Object.values(stats).reduce(addStats, emptyStats());
  const report = {
    runId,
    input: { key: manifest.inputKey, etag: manifest.etag, records: manifest.records },
    startedAt: manifest.startedAt,
    finishedAt: (deps.now?.() ?? new Date()).toISOString(),
    pairs: pairs.length,
    rejects: rejects.length,
    stages: stats,
    totals: {
      calls: totals.calls,
      inputTokens: totals.inputTokens,
      outputTokens: totals.outputTokens,
      costUsd: totals.costUsd,
    },
    rejectsByStage,
    failedShards,
    models: config.models,
    templates: Object.fromEntries(
      MODEL_STAGES.map((s) => [s, templateHash(templateFor(s, config.stages[s].template))]),
    ),
    accounting: {
      inputRecords: manifest.records,
      pairs: pairs.length,
      rejects: rejects.length,
      balanced: true,
    },
  };

  const keys = {
    pairsKey: outputKey(runId, 'pairs.jsonl'),
    rejectsKey: outputKey(runId, 'rejects.jsonl'),
    reportKey: outputKey(runId, 'report.json'),
  };
  await store.putStream(keys.pairsKey, jsonlChunks(pairs));
  await store.putStream(keys.rejectsKey, jsonlChunks(rejects));
  await store.put(keys.reportKey, `${JSON.stringify(report, null, 2)}\n`);
  return { runId, pairs: pairs.length, rejects: rejects.length, ...keys };
}

async function* jsonlChunks(rows: readonly unknown[]): AsyncGenerator<string> {
  for (let i = 0; i < rows.length; i += 1000)
    yield rows
      .slice(i, i + 1000)
      .map((row) => `${JSON.stringify(row)}\n`)
      .join('');
}
