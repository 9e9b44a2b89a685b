import { createInterface } from 'node:readline';
import type { z } from 'zod';
import { BatchJobStats, BatchPlan, batchKey, batchPlanKey } from '../batch/batch-service.js';
import type { QualityConfig } from '../config.js';
import { parseConfig } from '../config.js';
import type { StageDeps } from '../deps.js';
import { AccountingError } from '../errors.js';
import { NO_CATEGORY } from '../export/dataset-card.js';
import { REPORT_HTML_FILE, ReportTally, renderReportHtml } from '../export/report-html.js';
import { writeExports } from '../export/write-exports.js';
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
import {
  DEFAULT_FUNCTION_MEMORY_MB,
  FUNCTION_MEMORY_MB,
  infraCostOf,
  PRICE_TABLE,
  perPairUsd,
} from '../prices.js';
import { templateFor, templateHash } from '../prompts/templates.js';
import { stockRefusal } from '../quality/checks.js';
import { DiversityTally } from '../quality/diversity.js';
import { NearDuplicateIndex } from '../quality/near-duplicates.js';
import {
  Manifest,
  type MergeInput,
  type MergeResult,
  MODEL_STAGES,
  type ModelStage,
  type Pair,
  Reject,
  RespondedRecord,
  SHARD_STAGES,
  STAGES,
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

/**
 * Caps pairs that share a near-identical chosen response at `maxNearIdenticalChosen`: in each group of
 * near-identical chosen responses (MinHash at the near-duplicate threshold), the pairs with the best
 * evaluate scores, earliest first on a tie, stay; the others are returned, by id, with the id of the
 * group's first pair, which each of them matched, or of the best one when the first is capped too. Reads the evaluate output of every complete shard.
 */
async function capNearIdenticalChosen(
  store: StageDeps['store'],
  runId: string,
  manifest: Manifest,
  quality: QualityConfig,
): Promise<Map<string, { detail: string; duplicateOf: string }>> {
  const index = new NearDuplicateIndex<number>({
    threshold: quality.nearDuplicateThreshold,
    permutations: quality.minhashPermutations,
    shingleSize: quality.shingleSize,
  });
  const groups: { id: string; score: number }[][] = [];
  for (const { shard } of manifest.shards) {
    // A shard is complete exactly when its last stage's stats exist.
    if ((await store.tryGet(shardStatsKey(runId, shard, 'evaluate'))) === undefined) continue;
    for (const line of parseLines(await store.get(shardKey(runId, shard, 'evaluate')))) {
      const record = RespondedRecord.parse(line);
      const member = { id: record.id, score: record.trace.evaluate?.score ?? 0 };
      const found = index.claim(record.chosen, groups.length);
      if (found) groups[found.value]?.push(member);
      else groups.push([member]);
    }
  }
  const capped = new Map<string, { detail: string; duplicateOf: string }>();
  const max = quality.maxNearIdenticalChosen;
  for (const group of groups) {
    if (group.length <= max) continue;
    // Array.prototype.sort is stable: on equal scores, the earlier pair stays ahead.
    const ranked = [...group].sort((a, b) => b.score - a.score);
    // Each member matched the group's first pair: that is the one it duplicates, if it stays.
    const kept = new Set(ranked.slice(0, max).map((m) => m.id));
    const first = (group[0] as { id: string }).id;
    const reference = kept.has(first) ? first : (ranked[0] as { id: string }).id;
    for (const { id } of ranked.slice(max))
      capped.set(id, {
        detail: `${group.length} pairs share a near-identical chosen response; at most ${max} are kept`,
        duplicateOf: reference,
      });
  }
  return capped;
}

/** The dataset card's line on failed shards: how many, in which stages, and how many records they held. */
const failedShardsNote = (
  failed: readonly { stage: StageName }[],
  rejectsByStage: Record<string, Record<string, number>>,
): string => {
  const records = Object.values(rejectsByStage).reduce((n, reasons) => n + (reasons['shard-failed'] ?? 0), 0);
  const stages = [...new Set(failed.map((f) => f.stage))].join(', ');
  return (
    `${failed.length} shard(s) failed after every retry (in ${stages}): their ${records} records are ` +
    'rejects `shard-failed`, never judged, so the pairs under-represent them.'
  );
};

/** A model stage's batch figures in report.json: its plan, and the stats of each of its jobs that ended. */
interface StageBatchReport {
  readonly mode: BatchPlan['mode'];
  readonly reason?: string;
  readonly calls: number;
  readonly onDemand: number;
  readonly jobs: BatchJobStats[];
  /** Planned jobs with no stats.json: not joined (yet), so they answered nothing and cost nothing here. */
  readonly jobsWithoutStats: number;
}

/** What the batch jobs of a run did, summed over every stage's jobs that ended; `calls` are answered records. */
interface BatchModeTotals {
  jobs: number;
  records: number;
  calls: number;
  errored: number;
  missing: number;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
}

/** Parses a batch file the run wrote; one that does not parse would leave the run's cost unaccounted for. */
function parseBatchFile<T>(schema: z.ZodType<T>, text: string, key: string, runId: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (cause) {
    throw new AccountingError(`run ${runId}: ${key} is not JSON`, { cause });
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success)
    throw new AccountingError(`run ${runId}: ${key} is unreadable: ${parsed.error.message}`, {
      cause: parsed.error,
    });
  return parsed.data;
}

/**
 * The batch figures of each model stage that was planned, from its plan.json and its jobs' stats.json.
 * A planned job without stats is counted, not read: it never ended or was never joined.
 */
async function readBatchReports(
  store: StageDeps['store'],
  runId: string,
): Promise<Partial<Record<ModelStage, StageBatchReport>>> {
  const reports: Partial<Record<ModelStage, StageBatchReport>> = {};
  for (const stage of MODEL_STAGES) {
    const planKey = batchPlanKey(runId, stage);
    const text = await store.tryGet(planKey);
    if (text === undefined) continue;
    const plan = parseBatchFile(BatchPlan, text, planKey, runId);
    const jobs: BatchJobStats[] = [];
    for (const { jobName } of plan.jobs) {
      const statsKey = batchKey(runId, stage, jobName, 'stats.json');
      const stats = await store.tryGet(statsKey);
      if (stats !== undefined) jobs.push(parseBatchFile(BatchJobStats, stats, statsKey, runId));
    }
    reports[stage] = {
      mode: plan.mode,
      ...(plan.reason === undefined ? {} : { reason: plan.reason }),
      calls: plan.calls,
      onDemand: plan.onDemand,
      jobs,
      jobsWithoutStats: plan.jobs.length - jobs.length,
    };
  }
  return reports;
}

/** Sums the stats of every job of every stage. */
function batchModeTotals(reports: Partial<Record<ModelStage, StageBatchReport>>): BatchModeTotals {
  const sum: BatchModeTotals = {
    jobs: 0,
    records: 0,
    calls: 0,
    errored: 0,
    missing: 0,
    inputTokens: 0,
    outputTokens: 0,
    costUsd: 0,
  };
  for (const report of Object.values(reports))
    for (const job of report.jobs) {
      sum.jobs++;
      sum.records += job.records;
      sum.calls += job.answered;
      sum.errored += job.errored;
      sum.missing += job.missing;
      sum.inputTokens += job.inputTokens;
      sum.outputTokens += job.outputTokens;
      sum.costUsd += job.costUsd;
    }
  return sum;
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
 * records of failed shards into rejects, caps pairs that share a near-identical chosen response,
 * checks that every input record is accounted for exactly once, measures the chosen responses, and
 * writes the exports, the dataset card, report.html and report.json (last). The report adds what the
 * stages' batch jobs did and cost to what they paid on-demand. Outputs are streamed: only one shard's
 * records are held at a time, plus a MinHash signature per pair for the cap and report.html's samples.
 */
export async function merge(input: MergeInput, deps: StageDeps): Promise<MergeResult> {
  const { store } = deps;
  const { runId } = input;
  const manifest = Manifest.parse(JSON.parse(await store.get(manifestKey(runId))));
  const config = parseConfig(JSON.parse(await store.get(configKey(runId))), `run ${runId} config`);
  const failures = new Map(
    [...(input.induceResults ?? []), ...(input.shardResults ?? [])].flatMap((r) =>
      'failed' in r ? [[r.shard, r.error] as const] : [],
    ),
  );

  const stats = Object.fromEntries(STAGES.map((stage) => [stage, emptyStats()])) as Record<
    StageName,
    StageStats
  >;
  stats.split = StageStats.parse(JSON.parse(await store.get(splitStatsKey(runId))));
  const capStarted = Date.now();
  const capped = await capNearIdenticalChosen(store, runId, manifest, config.quality);
  stats.merge.ms = Date.now() - capStarted;
  const failedShards: { shard: string; stage: StageName; error: string }[] = [];
  /** Lambda invocations of each model stage: one per shard it finished. */
  const shardTasks: Partial<Record<StageName, number>> = {};
  const completeShards: string[] = [];
  const rejectsByStage: Record<string, Record<string, number>> = {};
  const seen = new Set<string>();
  const count = (id: string) => {
    if (seen.has(id)) throw new AccountingError(`run ${runId}: record ${id} is counted twice`);
    seen.add(id);
  };
  let rejectCount = 0;
  // Gathers report.html's histograms and samples on the way, holding counts and a few pairs, never all.
  const tally = new ReportTally();
  const counted = (reject: Reject): Reject => {
    count(reject.id);
    rejectCount++;
    tally.addReject(reject);
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
      for (const stage of SHARD_STAGES) {
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
        if (MODEL_STAGES.includes(stage as ModelStage)) shardTasks[stage] = (shardTasks[stage] ?? 0) + 1;
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
        for (const { id, source, line } of survivors) {
          const cap = capped.get(id);
          if (cap === undefined) count(id);
          else yield counted({ id, stage: 'merge', reason: 'near-identical-chosen', source, line, ...cap });
        }
        completeShards.push(shard);
      }
    }
  }

  /** The pairs of the complete shards. */
  async function* allPairs(): AsyncGenerator<Pair> {
    for (const shard of completeShards)
      for (const record of parseLines(await store.get(shardKey(runId, shard, 'evaluate')))) {
        const pair = toPair(RespondedRecord.parse(record));
        if (!capped.has(pair.id)) yield pair;
      }
  }
  const chosen = new DiversityTally();
  const categories: Record<string, number> = {};
  let stockRefusals = 0;
  async function* measured(pairs: AsyncIterable<Pair>): AsyncGenerator<Pair> {
    for await (const pair of pairs) {
      chosen.add(pair.chosen);
      if (stockRefusal(pair.chosen)) stockRefusals++;
      const category = pair.category ?? NO_CATEGORY;
      categories[category] = (categories[category] ?? 0) + 1;
      tally.addPair(pair);
      yield pair;
    }
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
  await store.putStream(keys.pairsKey, jsonlChunks(measured(allPairs())));
  stats.merge = { ...stats.merge, in: capped.size + pairCount, out: pairCount, rejected: capped.size };
  const diversity = chosen.summary();

  const totals = Object.values(stats).reduce(addStats, emptyStats());
  // Batch answers reach the stages through the call cache, as hits: the shard stats hold only what was
  // paid on-demand, and the jobs' own stats what was paid for batch.
  const batch = await readBatchReports(store, runId);
  const batchTotals = batchModeTotals(batch);
  const onDemand = MODEL_STAGES.map((s) => stats[s]).reduce(addStats, emptyStats());
  const batchCostOf = (stage: ModelStage) => (batch[stage]?.jobs ?? []).reduce((n, j) => n + j.costUsd, 0);
  const stages = Object.fromEntries(
    STAGES.map((stage) => {
      const model = MODEL_STAGES.find((s) => s === stage);
      return [
        stage,
        model === undefined ? stats[stage] : { ...stats[stage], batchCostUsd: batchCostOf(model) },
      ];
    }),
  );
  const report = {
    runId,
    input: { key: manifest.inputKey, etag: manifest.etag, records: manifest.records },
    startedAt: manifest.startedAt,
    finishedAt: (deps.now?.() ?? new Date()).toISOString(),
    pairs: pairCount,
    rejects: rejectCount,
    stages,
    // Both modes: a batch answer is a paid call, not a cache hit, though the stage found it in the cache.
    totals: {
      calls: totals.calls + batchTotals.calls,
      inputTokens: totals.inputTokens + batchTotals.inputTokens,
      outputTokens: totals.outputTokens + batchTotals.outputTokens,
      costUsd: totals.costUsd + batchTotals.costUsd,
      cacheHits: Math.max(0, totals.cacheHits - batchTotals.calls),
      cacheMisses: totals.cacheMisses,
      throttled: totals.throttled,
      retries: totals.retries,
    },
    cost: runCost({
      stats,
      shardTasks,
      modelsUsd: totals.costUsd + batchTotals.costUsd,
      jobs: batchTotals.jobs,
      batchStages: Object.keys(batch).length,
      shards: manifest.shards.length,
      mode: config.mode,
      pairs: pairCount,
    }),
    mode: config.mode,
    modes: {
      'on-demand': {
        calls: onDemand.calls,
        inputTokens: onDemand.inputTokens,
        outputTokens: onDemand.outputTokens,
        costUsd: onDemand.costUsd,
      },
      batch: batchTotals,
    },
    batch,
    rejectsByStage,
    quality: {
      chosen: {
        pairs: pairCount,
        stockRefusals,
        stockRefusalShare: pairCount === 0 ? 0 : stockRefusals / pairCount,
        distinct1: diversity.distinct1,
        distinct2: diversity.distinct2,
        mostFrequent: diversity.top,
      },
      cappedNearIdenticalChosen: capped.size,
      settings: config.quality,
    },
    failedShards,
    models: config.models,
    thresholds: { filter: config.stages.filter.threshold, evaluate: config.stages.evaluate.threshold },
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
  const dataExportKeys = await writeExports(store, runId, allPairs, {
    runId,
    created: report.finishedAt,
    input: { key: manifest.inputKey, records: manifest.records },
    pairs: pairCount,
    rejects: rejectCount,
    stages: stats,
    rejectsByStage,
    categories,
    models: config.models,
    templates: report.templates,
    quality: config.quality,
    thresholds: report.thresholds,
    limitations: failedShards.length === 0 ? [] : [failedShardsNote(failedShards, rejectsByStage)],
    figures: {
      stockRefusalShare: report.quality.chosen.stockRefusalShare,
      distinct2: diversity.distinct2,
      topChosen: [...diversity.top],
    },
  });
  const htmlKey = outputKey(runId, REPORT_HTML_FILE);
  await store.put(htmlKey, renderReportHtml({ ...report, ...tally.figures() }));
  const exportKeys = [...dataExportKeys, htmlKey];
  // Written last: a report names outputs that all exist.
  await store.put(
    keys.reportKey,
    `${JSON.stringify({ ...report, categories, exports: exportKeys }, null, 2)}\n`,
  );
  return { runId, pairs: pairCount, rejects: rejectCount, ...keys, exportKeys };
}

/**
 * What a run cost: its model calls (both modes, from the tokens each call reported), and an estimate of
 * the serverless part: Lambda GB-seconds from each stage's measured time at its deployed memory, one
 * request per task, and the state transitions of the workflow's shape (retries not counted). Locally
 * these are what the same run would cost in AWS.
 */
function runCost(run: {
  stats: Record<StageName, StageStats>;
  shardTasks: Partial<Record<StageName, number>>;
  modelsUsd: number;
  jobs: number;
  batchStages: number;
  shards: number;
  mode: string;
  pairs: number;
}) {
  const functionOf = (stage: string) => (stage.startsWith('dedup') ? 'dedup' : stage);
  let lambdaGbSeconds = 0;
  for (const [stage, s] of Object.entries(run.stats))
    lambdaGbSeconds +=
      (s.ms / 1000) * ((FUNCTION_MEMORY_MB[functionOf(stage)] ?? DEFAULT_FUNCTION_MEMORY_MB) / 1024);
  const shardTasks = Object.values(run.shardTasks).reduce((n, c) => n + (c ?? 0), 0);
  // split, the two dedup passes and merge; in batch modes a plan per stage and a submit and join per job.
  const lambdaRequests = 4 + shardTasks + run.batchStages + 2 * run.jobs;
  // The nine top-level states (RunCompleted the last), a task per shard and stage, and in batch modes the two judge Maps' choices and
  // three states per stage and per job.
  const batched = run.mode !== 'on-demand';
  const stateTransitions = batched ? 9 + 12 + 3 * run.jobs + run.shards * 6 : 9 + run.shards * 4;
  const infraUsd = infraCostOf({ lambdaGbSeconds, lambdaRequests, stateTransitions });
  const totalUsd = run.modelsUsd + infraUsd;
  return {
    priceTable: PRICE_TABLE.version,
    modelsUsd: run.modelsUsd,
    infra: { lambdaGbSeconds, lambdaRequests, stateTransitions, usd: infraUsd },
    totalUsd,
    perPairUsd: perPairUsd(totalUsd, run.pairs),
  };
}
