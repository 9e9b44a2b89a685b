import { BedrockClient } from '@aws-sdk/client-bedrock';
import { S3Client } from '@aws-sdk/client-s3';
import type { BatchService } from './batch/batch-service.js';
import { BedrockBatchService } from './batch/bedrock-batch.js';
import type { Budget } from './budget.js';
import { loadEnv } from './env.js';
import { ConfigError } from './errors.js';
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
  /** Runs batch jobs (modes `batch` and `auto`): Bedrock in AWS, the emulator locally. */
  readonly batch?: BatchService;
  /**
   * Collects, instead of making, the calls the cache cannot answer, for a batch job: a stage run with it
   * pays nothing and writes nothing. Absent, calls are made on-demand.
   */
  readonly collect?: (call: {
    readonly key: string;
    readonly request: GenerateRequest | JudgeRequest<unknown>;
  }) => void;
  /**
   * The run's spending limit, shared by every shard of a local execution: each paid call reserves its
   * worst-case cost first and is not made when that would pass the limit. Absent, spending is unlimited.
   */
  readonly budget?: Budget;
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

let batchDeps: StageDeps | undefined;

/** The dependencies of the batch function's process: the stage ones, and Bedrock batch jobs run under the role CDK made for them. */
export const defaultBatchDeps = (): StageDeps => {
  batchDeps ??= batchDepsFrom(loadEnv(), defaultDeps());
  return batchDeps;
};

function batchDepsFrom(env: ReturnType<typeof loadEnv>, base: StageDeps): StageDeps {
  if (!env.BATCH_ROLE_ARN)
    throw new ConfigError('the batch function needs BATCH_ROLE_ARN: the role Bedrock runs batch jobs under');
  const batch = new BedrockBatchService({
    bedrock: new BedrockClient({}),
    store: base.store,
    bucket: env.BUCKET_NAME,
    roleArn: env.BATCH_ROLE_ARN,
  });
  return { ...base, batch };
}
