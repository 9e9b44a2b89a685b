import { BedrockClient } from '@aws-sdk/client-bedrock';
import { S3Client } from '@aws-sdk/client-s3';
import { loadEnv } from '../pipeline/env.js';
import { type ParameterStore, SsmParameterStore } from '../pipeline/parameters.js';
import { S3Store } from '../pipeline/store/s3-store.js';
import type { Store } from '../pipeline/store/store.js';

/** What the ReverseTuning steps need from the outside world; handlers pass it, tests fake it. */
export interface TuningDeps {
  readonly store: Store;
  readonly parameters: ParameterStore;
  /** The Bedrock control plane, built on first use: only serving steps call it. */
  readonly bedrock: () => Pick<BedrockClient, 'send'>;
  readonly now?: () => Date;
}

let processDeps: TuningDeps | undefined;

/** The dependencies of a Lambda process, built once from its environment. */
export const defaultTuningDeps = (): TuningDeps => {
  if (!processDeps) {
    let bedrock: BedrockClient | undefined;
    processDeps = {
      store: new S3Store(new S3Client({}), loadEnv().BUCKET_NAME),
      parameters: new SsmParameterStore(),
      bedrock: () => {
        bedrock ??= new BedrockClient({});
        return bedrock;
      },
    };
  }
  return processDeps;
};
