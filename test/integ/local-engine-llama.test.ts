import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runLocal } from '../../lib/local/run-local.js';
import { parseConfig } from '../../lib/pipeline/config.js';
import type { Pair, Reject } from '../../lib/pipeline/schemas.js';
import { readJsonlFile, tempDir } from '../support/temp.js';
import { writeTinyGguf } from '../support/tiny-gguf.js';

const fixture = new URL('../fixtures/records-60.jsonl', import.meta.url).pathname;

describe('a local run with an in-process GGUF model', () => {
  it('runs the synthesized definition on the fixture and accounts for every record', async () => {
    const model = join(tempDir(), 'tiny.gguf');
    await writeTinyGguf(model, { seed: 11 });
    const spec = `llama:${model}`;
    const config = parseConfig({
      models: { induce: spec, filter: spec, respond: spec, evaluate: spec },
      shardSize: 20,
      quality: { lengths: { rejected: { max: 2000 } } },
      stages: {
        induce: { maxTokens: 16 },
        filter: { maxTokens: 48, threshold: 1 },
        respond: { maxTokens: 16 },
        evaluate: { maxTokens: 48, threshold: 1 },
      },
    });
    const outDir = tempDir();

    const result = await runLocal({ input: fixture, outDir, config });

    const pairs = readJsonlFile<Pair>(join(outDir, 'pairs.jsonl'));
    const rejects = readJsonlFile<Reject>(join(outDir, 'rejects.jsonl'));
    const report = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));
    const ids = [...pairs, ...rejects].map((r) => r.id);
    expect(new Set(ids).size).toBe(62);
    expect(ids).toHaveLength(62);
    expect(report.accounting).toEqual({
      inputRecords: 62,
      pairs: pairs.length,
      rejects: rejects.length,
      balanced: true,
    });
    expect(result.pairs).toBe(pairs.length);
    expect(report.stages.induce.calls).toBe(56);
    expect(report.stages.induce.inputTokens).toBeGreaterThan(56 * 50);
    expect(report.models.induce).toBe(spec);
    for (const pair of pairs) expect(pair.chosen).not.toBe(pair.rejected);
  }, 300_000);
});
