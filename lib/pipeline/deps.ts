import { S3Client } from '@aws-sdk/client-s3';
import { type Env, loadEnv } from './env.js';
import { ConfigError } from './errors.js';
import type { ModelClient } from './models/model-client.js';
import { ModelRegistry } from './models/registry.js';
import { FsStore } from './store/fs-store.js';
import { S3Store } from './store/s3-store.js';
import type { Store } from './store/store.js';

/** What every stage needs from the outside world; handlers pass it, tests fake it. */
export interface StageDeps {
  readonly store: Store;
  readonly models: { get(spec: string): Promise<ModelClient> };
  /** The clock, for timestamps in the manifest. */
  readonly now?: () => Date;
}

/** Builds stage dependencies from an environment: S3 when BUCKET_NAME is set, else STORE_DIR. */
export function depsFromEnv(env: Env, models: StageDeps['models'] = new ModelRegistry()): StageDeps {
  if (env.BUCKET_NAME) return { store: new S3Store(new S3Client({}), env.BUCKET_NAME), models };
  if (env.STORE_DIR) return { store: new FsStore(env.STORE_DIR), models };
  throw new ConfigError('set BUCKET_NAME (AWS) or STORE_DIR (local) for the stage functions');
}

let processDeps: StageDeps | undefined;

/** The dependencies of a Lambda process, built once from process.env. */
export const defaultDeps = (): StageDeps => {
  processDeps ??= depsFromEnv(loadEnv());
  return processDeps;
};
