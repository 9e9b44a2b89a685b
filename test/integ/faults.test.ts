import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLocal } from '../../lib/local/run-local.js';
import { parseConfig } from '../../lib/pipeline/config.js';
import { BedrockModelClient } from '../../lib/pipeline/models/bedrock.js';
import { CallCache } from '../../lib/pipeline/models/call-cache.js';
import type { Pair, Reject } from '../../lib/pipeline/schemas.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { type BedrockFake, preferFakeAnswers, startBedrockFake } from '../support/bedrock-fake.js';
import { readJsonlFile, tempDir } from '../support/temp.js';

const HAIKU = 'bedrock:anthropic.claude-3-haiku-20240307-v1:0';
const RECORDS = 500;

/** Five hundred distinct posts, one JSON line each. */
function writeInput(): string {
  const path = join(tempDir(), 'posts.jsonl');
  const lines = Array.from({ length: RECORDS }, (_, i) =>
    JSON.stringify({
      id: `p${i}`,
      text: `Post ${i}: people from district ${i % 37} are all liars (${i * 7919})`,
    }),
  );
  writeFileSync(path, `${lines.join('\n')}\n`);
  return path;
}

/** Bedrock clients that make one attempt each, pointed at the fake: all retrying is the pipeline's. */
const registryFor = (fake: BedrockFake) => {
  const client = new BedrockRuntimeClient({
    endpoint: fake.url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDFAKE', secretAccessKey: 'fake' },
    maxAttempts: 1,
  });
  return { get: async (spec: string) => new BedrockModelClient({ spec, modelId: spec.slice(8), client }) };
};

const config = parseConfig({
  models: { induce: HAIKU, filter: HAIKU, respond: HAIKU, evaluate: HAIKU },
  shardSize: 25,
  retry: { baseDelayMs: 2, maxDelayMs: 40 },
});

describe('a 500-record run against an endpoint that throttles 30% and fails 2% of requests', () => {
  let fake: BedrockFake;
  let input: string;
  let outDir: string;
  let cache: CallCache;

  beforeAll(async () => {
    fake = await startBedrockFake({
      throttleRate: 0.3,
      errorRate: 0.02,
      malformedToolRate: 0.02,
      seed: 7,
      respond: preferFakeAnswers,
    });
    input = writeInput();
    outDir = tempDir();
    cache = new CallCache(new FsStore(tempDir()));
    await runLocal({ input, outDir, config, registry: registryFor(fake), cache, retryIntervalMs: 5 });
  }, 180_000);

  afterAll(async () => {
    await fake?.close();
  });

  it('accounts for every record exactly once, in the pairs or the rejects', () => {
    const pairs = readJsonlFile<Pair>(join(outDir, 'pairs.jsonl'));
    const rejects = readJsonlFile<Reject>(join(outDir, 'rejects.jsonl'));
    const ids = [...pairs, ...rejects].map((r) => r.id).sort();

    expect(ids).toEqual(Array.from({ length: RECORDS }, (_, i) => `p${i}`).sort());
    expect(pairs.length).toBeGreaterThan(RECORDS / 2);
  });

  it('rode out the throttling inside the stages, with no shard lost', () => {
    const report = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));
    const rejects = readJsonlFile<Reject>(join(outDir, 'rejects.jsonl'));

    expect(report.failedShards).toEqual([]);
    expect(rejects.filter((r) => r.reason === 'shard-failed')).toEqual([]);
    expect(report.totals.throttled).toBeGreaterThan(report.totals.calls * 0.2);
    expect(report.totals.retries).toBeGreaterThan(report.totals.throttled);
    // A shard retried by the definition reads back what its failed attempt paid for, and counts it.
    expect(report.totals.calls).toBe(report.totals.cacheMisses + report.totals.cacheHits);
  });

  it('makes zero model calls when the same input runs again, into a new folder', async () => {
    const before = fake.requests.length;
    const again = tempDir();

    await runLocal({ input, outDir: again, config, registry: registryFor(fake), cache, retryIntervalMs: 5 });

    const report = JSON.parse(readFileSync(join(again, 'report.json'), 'utf8'));
    const first = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));
    expect(fake.requests.length).toBe(before);
    expect(report.totals).toMatchObject({ calls: 0, costUsd: 0, cacheMisses: 0 });
    expect(report.totals.cacheHits).toBe(first.totals.cacheMisses);
    expect(readFileSync(join(again, 'pairs.jsonl'), 'utf8')).toBe(
      readFileSync(join(outDir, 'pairs.jsonl'), 'utf8'),
    );
  });
});
