import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ProgressEvent, runLocal } from '../lib/local/run-local.js';
import { FakeModel, fakeRegistry } from '../test/support/fake-model.js';
import { fakeConfig } from '../test/support/pipeline.js';
import { texts } from '../test/support/texts.js';
import type { Bench, BenchRow } from './bench.js';

const RECORDS = 10_000;
const TARGET_RECORDS_PER_SECOND = 2_000;

/** Writes `records` distinct complaints as JSON Lines into `dir`; returns the file's path. */
export async function writeInput(dir: string, records: number): Promise<string> {
  const path = join(dir, 'complaints.jsonl');
  const lines = texts(records).map((text, i) => `${JSON.stringify({ id: `c${i}`, text })}\n`);
  await writeFile(path, lines.join(''));
  return path;
}

/** Milliseconds covered by at least one of the intervals: the wall time some task was running. */
function coveredMs(intervals: readonly (readonly [number, number])[]): number {
  const sorted = [...intervals].sort((a, b) => a[0] - b[0]);
  let covered = 0;
  let end = Number.NEGATIVE_INFINITY;
  for (const [start, stop] of sorted) {
    if (stop <= end) continue;
    covered += stop - Math.max(start, end);
    end = stop;
  }
  return covered;
}

/** Options of the orchestration bench; the test suite runs it small. */
export interface OrchestrationOptions {
  /** Input records; default 10,000. */
  readonly records?: number;
}

/**
 * Orchestration overhead: records per second through the whole local engine (the synthesized definition
 * on aws-local-stepfunctions, every stage) with a model that answers at once, so what is measured is the
 * engine, the store and the stages' own work. Default shard size and concurrency. Reports where the time
 * goes: the sum of task milliseconds per stage, and the wall time no task was running, per state
 * transition (the report's estimate of the workflow's transitions).
 */
export function orchestrationBench(options: OrchestrationOptions = {}): Bench {
  const records = options.records ?? RECORDS;
  return {
    name: 'orchestration',
    async run(): Promise<BenchRow[]> {
      const dir = await mkdtemp(join(tmpdir(), 'bench-orchestration-'));
      try {
        const input = await writeInput(dir, records);
        const events: ProgressEvent[] = [];
        const intervals: [number, number][] = [];
        const started = performance.now();
        let splitAt = started;
        const result = await runLocal({
          input,
          outDir: join(dir, 'out'),
          config: fakeConfig(),
          registry: fakeRegistry(new FakeModel()),
          onProgress: (event) => {
            events.push(event);
            if (event.type === 'split') splitAt = performance.now();
            if (event.type === 'stage') {
              const now = performance.now();
              intervals.push([now - event.ms, now]);
            }
          },
        });
        const wallMs = performance.now() - started;
        const report = JSON.parse(await readFile(result.reportPath, 'utf8')) as {
          cost: { infra: { stateTransitions: number } };
        };
        const stageMs: Record<string, number> = {};
        for (const event of events)
          if (event.type === 'stage') stageMs[event.stage] = (stageMs[event.stage] ?? 0) + event.ms;
        const taskMs = Object.values(stageMs).reduce((a, b) => a + b, 0);
        const busyMs = coveredMs(intervals);
        const transitions = report.cost.infra.stateTransitions;
        const perSecond = records / (wallMs / 1000);
        const failed = events.filter((e) => e.type === 'stage-error').length;
        return [
          {
            bench: 'orchestration',
            case: `${records} records, instant model`,
            figures: {
              'records/s': Math.round(perSecond),
              'wall s': (wallMs / 1000).toFixed(1),
              pairs: result.pairs,
              // Synthesizing the stack, starting the engine and split: split reports no ms of its own.
              'ms to split': Math.round(splitAt - started),
              'task ms (sum)': Math.round(taskMs),
              'idle ms': Math.round(wallMs - busyMs),
              transitions,
              'ms/transition': ((wallMs - busyMs) / transitions).toFixed(2),
              'ms by stage': Object.entries(stageMs)
                .sort((a, b) => b[1] - a[1])
                .map(([stage, ms]) => `${stage} ${Math.round(ms)}`)
                .join(', '),
            },
            target: `>= ${TARGET_RECORDS_PER_SECOND} records/s, no failed task`,
            met: perSecond >= TARGET_RECORDS_PER_SECOND && failed === 0,
          },
        ];
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/** The orchestration bench at full size, for `npm run bench`. */
export const orchestration = orchestrationBench();
