import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import type { Bench, BenchRow } from './bench.js';

const PEAK_TARGET_MB = 300;
/** Half the memory of the dedup function, which holds a MinHash signature per record of a run. */
const DEDUP_TARGET_MB = 1504;
const DISTINCT_TEXTS = 200_000;
const LINES = 1_000_000;
const LONG_LINE_BYTES = 100 * 1024 * 1024;

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const child = fileURLToPath(new URL('split-child.ts', import.meta.url));

/** A small deterministic PRNG (mulberry32), so every run splits the same input. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SUBJECTS = ['my landlord', 'the referee', 'people from the next town', 'the new coworker', 'tourists'];
const CLAIMS = [
  'should be run out of town',
  'ought to be harassed at home until they move',
  'deserve to be insulted until they quit',
  'need to be taught a lesson they will not forget',
  'are the worst people alive and everyone should know it',
];
const CATEGORIES = ['harassment', 'hate', 'violence'];

/**
 * A million lines of JSON Lines, 100 to 200 bytes each: one in 50 repeats an earlier text (for the
 * dedup pass to reject), one in 1,000 is cut short (an invalid-json reject), one in 10,000 is blank.
 * Returns the chunks and how many non-blank lines, the records split must count, there are.
 */
function millionLines(): { chunks: AsyncIterable<string>; records: number } {
  const pick = random(42);
  const textOf = (n: number) => {
    const next = random(n);
    const choose = <T>(list: readonly T[]) => list[Math.floor(next() * list.length)] as T;
    return `Honestly ${choose(SUBJECTS)} ${choose(CLAIMS)}. Post #${n}, and I mean every word of it.`;
  };
  const blank = (i: number) => i % 10_000 === 9_999;
  async function* chunks() {
    let batch = '';
    for (let i = 0; i < LINES; i++) {
      const text = textOf(i % 50 === 49 ? Math.floor(pick() * i) : i);
      const category = CATEGORIES[i % CATEGORIES.length];
      const line = JSON.stringify({ id: `post-${i}`, text, category });
      batch += blank(i) ? '\n' : i % 1_000 === 500 ? `${line.slice(0, 40)}\n` : `${line}\n`;
      if (batch.length >= 1 << 16) {
        yield batch;
        batch = '';
      }
    }
    yield batch;
  }
  let blanks = 0;
  for (let i = 0; i < LINES; i++) if (blank(i)) blanks++;
  return { chunks: chunks(), records: LINES - blanks };
}

/** `DISTINCT_TEXTS` lines of twenty words drawn from 5,000, so no two are near-duplicates. */
async function* distinctTexts() {
  const next = random(7);
  const words = Array.from({ length: 5000 }, (_, i) => `w${(i * 7919).toString(36)}`);
  let batch = '';
  for (let i = 0; i < DISTINCT_TEXTS; i++) {
    const text = Array.from({ length: 20 }, () => words[Math.floor(next() * words.length)]).join(' ');
    batch += `${JSON.stringify({ id: `t-${i}`, text })}\n`;
    if (batch.length >= 1 << 16) {
      yield batch;
      batch = '';
    }
  }
  yield batch;
}

/** One line of 100 MB (a JSON string never closed by a newline until the very end), then a normal line. */
async function* longLine() {
  yield '{"text":"';
  const megabyte = 'a'.repeat(1024 * 1024);
  for (let written = 0; written < LONG_LINE_BYTES; written += megabyte.length) yield megabyte;
  yield '"}\n{"text":"the line after the long one"}\n';
}

/** What the child split reported, and the wall time around it. */
interface ChildReport {
  records: number;
  shards: number;
  rejects: number;
  ms: number;
  peakMb: number;
  wallMs: number;
  /** Records the dedup pass kept, when it ran. */
  kept?: number;
}

/** Splits `inputKey` of the store at `root` in a fresh Node process. */
function splitInChild(root: string, inputKey: string, then?: 'merge' | 'dedup'): Promise<ChildReport> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', child, root, inputKey, ...(then ? [then] : [])],
      {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    proc.stdout.setEncoding('utf8').on('data', (text: string) => {
      out += text;
    });
    proc.on('error', reject);
    proc.on('close', (code) => {
      if (code !== 0) return reject(new Error(`the split of ${inputKey} exited with code ${code}`));
      resolve({ ...(JSON.parse(out) as Omit<ChildReport, 'wallMs'>), wallMs: performance.now() - started });
    });
  });
}

async function writeInput(path: string, chunks: AsyncIterable<string>) {
  await mkdir(dirname(path), { recursive: true });
  await pipeline(Readable.from(chunks), createWriteStream(path));
}

/**
 * Peak memory of split over a million-line input and over a single 100 MB line, and of the dedup pass
 * over 200,000 distinct texts, each in its own process.
 */
export const inputMemory: Bench = {
  name: 'input-memory',
  async run() {
    const root = await mkdtemp(join(tmpdir(), 'safer-instruct-bench-'));
    try {
      const million = millionLines();
      const cases = [
        { name: '1M lines', key: 'incoming/million.jsonl', chunks: million.chunks, records: million.records },
        // The same file again, split and merged: merge streams a million rejects out.
        {
          name: '1M lines, split + merge',
          key: 'incoming/million.jsonl',
          records: million.records,
          andMerge: true,
        },
        { name: '100 MB line', key: 'incoming/long-line.jsonl', chunks: longLine(), records: 2 },
        {
          name: '200K distinct texts, split + dedup-texts',
          key: 'incoming/distinct.jsonl',
          chunks: distinctTexts(),
          records: DISTINCT_TEXTS,
          andDedup: true,
        },
      ];
      const rows: BenchRow[] = [];
      for (const c of cases) {
        if (c.chunks) await writeInput(join(root, c.key), c.chunks);
        const then = 'andMerge' in c ? 'merge' : 'andDedup' in c ? 'dedup' : undefined;
        const report = await splitInChild(root, c.key, then);
        const target = then === 'dedup' ? DEDUP_TARGET_MB : PEAK_TARGET_MB;
        rows.push({
          bench: 'input-memory',
          case: c.name,
          figures: {
            records: report.records,
            shards: report.shards,
            rejects: report.rejects,
            's in process': (report.ms / 1000).toFixed(1),
            'wall s': (report.wallMs / 1000).toFixed(1),
            'peak MB': Math.round(report.peakMb),
            ...(report.kept === undefined ? {} : { kept: report.kept }),
          },
          target: `peak < ${target} MB, ${c.records} records${then === 'dedup' ? ' all kept' : ''}`,
          met:
            report.peakMb < target &&
            report.records === c.records &&
            (then !== 'dedup' || report.kept === c.records),
        });
        await rm(join(root, 'runs'), { recursive: true, force: true });
      }
      return rows;
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  },
};
