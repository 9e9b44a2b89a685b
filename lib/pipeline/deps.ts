import { S3Client } from '@aws-sdk/client-s3';
import { loadEnv } from './env.js';
import type { ModelClient } from './models/model-client.js';
import { ModelRegistry } from './models/registry.js';
import { S3Store } from './store/s3-store.js';
import type { Store } from './store/store.js';

/** What every stage needs from the outside world; handlers pass it, tests and the local engine fake it. */
export interface StageDeps {
  readonly store: Store;
  readonly models: { get(spec: string): Promise<ModelClient> };
  /** The clock, for timestamps in the manifest. */
  readonly now?: () => Date;
}

let processDeps: StageDeps | undefined;

/** The dependencies of a Lambda process, built once from its environment: the run bucket and the models. */
export const defaultDeps = (): StageDeps => {
  processDeps ??= {
    store: new S3Store(new S3Client({}), loadEnv().BUCKET_NAME),
    models: new ModelRegistry(),
  };
  return processDeps;
};
