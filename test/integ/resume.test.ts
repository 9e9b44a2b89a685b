import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { parseArgs } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../lib/cli/main.js';
import { type BedrockFake, preferFakeAnswers, startBedrockFake } from '../support/bedrock-fake.js';
import { tempDir } from '../support/temp.js';

const repo = new URL('../..', import.meta.url).pathname;
const fixture = join(repo, 'test/fixtures/records-60.jsonl');
const MODEL = 'bedrock:anthropic.claude-3-haiku-20240307-v1:0';
const ENV = {
  AWS_ACCESS_KEY_ID: 'AKIDFAKE',
  AWS_SECRET_ACCESS_KEY: 'fake',
  AWS_REGION: 'us-east-1',
};

/** Runs the CLI in this process; returns its exit code and what it wrote to stderr. */
async function cli(...args: string[]) {
  const stderr = new PassThrough();
  let err = '';
  stderr.on('data', (c) => {
    err += c;
  });
  const code = await main(args, { stdout: new PassThrough(), stderr, parseArgs });
  return { code, err };
}

/** The answered calls a cache folder holds: whole entries only, not a write cut short. */
const entriesIn = (dir: string): number =>
  readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.json')).length;

// One endpoint for the file: the CLI's Bedrock client is made once per process, with the first URL.
let fake: BedrockFake;
let victim: ChildProcess | undefined;
let killAt = Number.POSITIVE_INFINITY;
let denied = false;

beforeAll(async () => {
  fake = await startBedrockFake({
    latencyMs: 5,
    respond: (request) => {
      // Kill the run from inside the endpoint, while other calls are still in flight.
      if (victim && fake.answered >= killAt) {
        victim.kill('SIGKILL');
        victim = undefined;
      }
      if (denied && request.toolChoice?.tool?.name === 'record_preference')
        return { error: { status: 403, type: 'AccessDeniedException', message: 'no access to this model' } };
      return preferFakeAnswers(request);
    },
  });
  Object.assign(process.env, ENV, { AWS_ENDPOINT_URL_BEDROCK_RUNTIME: fake.url });
});

afterAll(async () => {
  victim?.kill('SIGKILL');
  await fake?.close();
});

describe('a run killed at a random point and resumed', () => {
  const reference = { out: tempDir(), cache: tempDir(), calls: 0 };
  const killed = { out: tempDir(), cache: tempDir(), answered: 0, entries: 0, runId: '' };
  const resumed = { calls: 0, code: -1, err: '' };

  beforeAll(async () => {
    const args = ['--model', MODEL, '--shard-size', '10'];

    // An uninterrupted run, for the pairs to match and the number of calls a whole run makes.
    const whole = await cli('run', fixture, '--out', reference.out, '--cache-dir', reference.cache, ...args);
    expect(whole.code, whole.err).toBe(0);
    reference.calls = fake.requests.length;

    // The same run in a process of its own, killed after a random number of answered calls.
    // Anywhere from a tenth to nine tenths of the way: earlier, every answer may still be in flight.
    killAt = fake.answered + Math.round(reference.calls * (0.1 + 0.8 * Math.random()));
    const start = fake.answered;
    victim = spawn(
      process.execPath,
      [
        join(repo, 'bin/safer-instruct.js'),
        'run',
        fixture,
        '--out',
        killed.out,
        '--cache-dir',
        killed.cache,
        ...args,
      ],
      { env: { ...process.env }, stdio: 'ignore' },
    );
    const child = victim;
    const exit = await new Promise<NodeJS.Signals | null>((resolve) =>
      child.on('exit', (_code, signal) => resolve(signal)),
    );
    expect(exit, `the run was to be killed after ${killAt - start} answers`).toBe('SIGKILL');
    killed.answered = fake.answered - start;
    killed.entries = entriesIn(killed.cache);
    killed.runId = readdirSync(join(killed.out, 'store/runs'))[0] as string;

    const before = fake.requests.length;
    const again = await cli(
      'run',
      '--resume',
      killed.runId,
      '--out',
      killed.out,
      '--cache-dir',
      killed.cache,
    );
    Object.assign(resumed, { code: again.code, err: again.err, calls: fake.requests.length - before });
  }, 180_000);

  it('produces the same pairs and rejects as the uninterrupted run', () => {
    expect(resumed.code, resumed.err).toBe(0);
    for (const file of ['pairs.jsonl', 'rejects.jsonl'])
      expect(readFileSync(join(killed.out, file), 'utf8')).toBe(
        readFileSync(join(reference.out, file), 'utf8'),
      );
  });

  it('asks the model only for what no cache entry answered before the kill', () => {
    const report = JSON.parse(readFileSync(join(killed.out, 'report.json'), 'utf8'));

    expect(killed.entries).toBeGreaterThan(0);
    expect(resumed.calls + killed.entries).toBe(reference.calls);
    // Every call the run paid for, before the kill or after, is counted once.
    expect(report.totals.calls).toBe(killed.entries + resumed.calls);
    expect(report.totals.cacheHits).toBeLessThanOrEqual(killed.entries);
  });

  it('lost at most the answers in flight at the kill', () => {
    // An answer on the wire when the process died was paid but never cached: at most one per call slot.
    expect(killed.answered - killed.entries).toBeGreaterThanOrEqual(0);
    expect(killed.answered - killed.entries).toBeLessThanOrEqual(16);
  });
});

describe('a run stopped by an unusable model', () => {
  it('says how to resume, and the resumed run finishes once the model is usable', async () => {
    denied = true;
    const out = tempDir();
    const stopped = await cli('run', fixture, '--out', out, '--model', MODEL, '--shard-size', '20');
    const hint = /resume with: safer-instruct run --resume (\S+) --out (\S+)/.exec(stopped.err);
    denied = false;

    const resumed = await cli('run', '--resume', hint?.[1] ?? '', '--out', hint?.[2] ?? '');

    expect(stopped.code, stopped.err).toBe(1);
    expect(stopped.err).toMatch(/AccessDeniedException/);
    expect(hint?.[2]).toBe(out);
    expect(resumed.code, resumed.err).toBe(0);
    expect(resumed.err).toMatch(/done {6}\d+ pairs, \d+ rejects/);
  });
});
