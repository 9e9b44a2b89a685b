import { S3Client } from '@aws-sdk/client-s3';
import { loadEnv } from './env.js';
import { CallCache } from './models/call-cache.js';
import { GovernorPool } from './models/governor-pool.js';
import type { GenerateRequest, JudgeRequest, ModelClient } from './models/model-client.js';
import { ModelRegistry } from './models/registry.js';
import { type ParameterStore, SsmParameterStore } from './parameters.js';
import { S3Store } from './store/s3-store.js';
import type { Store } from './store/store.js';

/** What every stage needs from the outside world; handlers pass it, tests and the local engine fake it. */
export interface StageDeps {
  readonly store: Store;
  readonly models: { get(spec: string): Promise<ModelClient> };
  /** Answered model calls by content address; absent, every call is paid (`--no-cache`). */
  readonly cache?: CallCache;
  /** Rate governors per model; absent, calls go out ungoverned and unretried (unit tests). */
  readonly governors?: GovernorPool;
  /** The clock, for timestamps in the manifest. */
  readonly now?: () => Date;
  /** Where `ssm:` model specs are read when a run starts; absent, such specs are an error. */
  readonly parameters?: ParameterStore;
  /**
   * Collects, instead of making, the calls the cache cannot answer, for a batch job: a stage run with it
   * pays nothing and writes nothing. Absent, calls are made on-demand.
   */
  readonly collect?: (call: {
    readonly key: string;
    readonly request: GenerateRequest | JudgeRequest<unknown>;
  }) => void;
}

let processDeps: StageDeps | undefined;

/**
 * The dependencies of a Lambda process, built once from its environment: the run bucket (which also
 * holds the call cache), the models, and governors that take this process's share of each quota.
 */
export const defaultDeps = (): StageDeps => {
  if (!processDeps) {
    const store = new S3Store(new S3Client({}), loadEnv().BUCKET_NAME);
    processDeps = {
      store,
      models: new ModelRegistry(),
      cache: new CallCache(store),
      governors: new GovernorPool({ sharedByShards: false }),
      parameters: new SsmParameterStore(),
    };
  }
  return processDeps;
};
