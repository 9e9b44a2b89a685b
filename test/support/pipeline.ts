import { type PipelineConfig, type PipelineConfigInput, parseConfig } from '../../lib/pipeline/config.js';
import type { StageDeps } from '../../lib/pipeline/deps.js';
import { dedup } from '../../lib/pipeline/stages/dedup.js';
import { split } from '../../lib/pipeline/stages/split.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { FakeModel, fakeRegistry } from './fake-model.js';
import { tempDir } from './temp.js';

/** A config whose four stages all use the fake model `fake:model`. */
export const fakeConfig = (overrides: PipelineConfigInput = {}) =>
  parseConfig({
    ...overrides,
    models: {
      induce: 'bedrock:fake',
      filter: 'bedrock:fake',
      respond: 'bedrock:fake',
      evaluate: 'bedrock:fake',
    },
  } as PipelineConfigInput);

/** Stage dependencies, plus the configuration the state machine would pass to split. */
export type TestDeps = StageDeps & { readonly config: PipelineConfig };

/** Stage dependencies over a temporary filesystem store and one fake model. */
export function fakeDeps(model = new FakeModel(), overrides: PipelineConfigInput = {}) {
  const store = new FsStore(tempDir());
  const deps: TestDeps = {
    store,
    models: fakeRegistry(model),
    config: fakeConfig(overrides),
    now: () => new Date('2026-01-01T00:00:00Z'),
  };
  return { store, deps, model };
}

/** Puts `body` under `incoming/<name>` and splits it. */
export async function putAndSplit(deps: TestDeps, name: string, body: string, executionId = 'exec-1') {
  const inputKey = `incoming/${name}`;
  await deps.store.put(inputKey, body);
  return split({ event: { inputKey }, executionId, config: deps.config }, deps);
}

/** Reads a JSONL object from the store. */
export const readJsonl = async <T = Record<string, unknown>>(store: FsStore, key: string): Promise<T[]> =>
  (await store.get(key))
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as T);

/** The dedup pass over texts, called as a shard stage is: it covers every shard of the run at once. */
export const dedupTexts = (task: { runId: string }, deps: StageDeps) =>
  dedup({ runId: task.runId, field: 'text' }, deps);

/** The dedup pass over instructions, called as a shard stage is. */
export const dedupInstructions = (task: { runId: string }, deps: StageDeps) =>
  dedup({ runId: task.runId, field: 'instruction' }, deps);
