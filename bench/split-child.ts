import { parseConfig } from '../lib/pipeline/config.js';
import { manifestKey } from '../lib/pipeline/keys.js';
import { Manifest } from '../lib/pipeline/schemas.js';
import { dedup } from '../lib/pipeline/stages/dedup.js';
import { merge } from '../lib/pipeline/stages/merge.js';
import { split } from '../lib/pipeline/stages/split.js';
import { FsStore } from '../lib/pipeline/store/fs-store.js';

/**
 * Splits one input in a process of its own, so that the peak resident memory it reports belongs to that
 * split alone; with `merge`, merges the run too, as if no shard got through its model stages, so every
 * record becomes a reject; with `dedup`, runs the dedup pass over the texts after the split.
 * Usage: `node --import tsx bench/split-child.ts <store root> <input key> [merge|dedup]`; prints one JSON line.
 */
const [root, inputKey, then] = process.argv.slice(2);
if (!root || !inputKey) throw new Error('usage: split-child.ts <store root> <input key> [merge|dedup]');

const store = new FsStore(root);
const models = {
  get: async (): Promise<never> => {
    throw new Error('split calls no model');
  },
};
const started = performance.now();
const result = await split(
  { event: { inputKey }, executionId: 'bench', config: parseConfig({}) },
  { store, models },
);
let kept: number | undefined;
if (then === 'dedup') kept = (await dedup({ runId: result.runId, field: 'text' }, { store, models })).records;
if (then === 'merge') {
  const merged = await merge({ runId: result.runId, shardResults: [] }, { store, models });
  if (merged.pairs + merged.rejects !== result.records) throw new Error('merge lost records');
}
const ms = performance.now() - started;
const manifest = Manifest.parse(JSON.parse(await store.get(manifestKey(result.runId))));
process.stdout.write(
  `${JSON.stringify({
    records: result.records,
    shards: result.shards.length,
    rejects: manifest.rejected,
    kept,
    ms,
    // resourceUsage reports the peak resident set in kilobytes.
    peakMb: process.resourceUsage().maxRSS / 1024,
  })}\n`,
);
