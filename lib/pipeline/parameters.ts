import type { SSMClient } from '@aws-sdk/client-ssm';
import { StoreTransientError } from './errors.js';
import type { Store } from './store/store.js';

/** Named string values the pipeline shares between workflows: SSM Parameter Store in AWS, a folder locally. */
export interface ParameterStore {
  /** The parameter's value, or undefined when it does not exist. */
  get(name: string): Promise<string | undefined>;
  /** Creates or replaces the parameter. */
  put(name: string, value: string, description?: string): Promise<void>;
}

/** The key a parameter is kept under in a Store. */
export const parameterKey = (name: string) => `parameters/${name.replace(/^\/+/, '')}`;

/** Parameters as objects of a Store, under `parameters/`: the local engine's SSM. */
export class StoreParameterStore implements ParameterStore {
  constructor(private readonly store: Store) {}

  get(name: string): Promise<string | undefined> {
    return this.store.tryGet(parameterKey(name));
  }

  put(name: string, value: string): Promise<void> {
    return this.store.put(parameterKey(name), value);
  }
}

/** SSM Parameter Store; the client is built on first use, so a process that never asks pays nothing. */
export class SsmParameterStore implements ParameterStore {
  private client?: Promise<SSMClient>;
  constructor(client?: SSMClient) {
    if (client) this.client = Promise.resolve(client);
  }

  private ssm(): Promise<SSMClient> {
    this.client ??= import('@aws-sdk/client-ssm').then(({ SSMClient }) => new SSMClient({}));
    return this.client;
  }

  async get(name: string): Promise<string | undefined> {
    const { GetParameterCommand } = await import('@aws-sdk/client-ssm');
    try {
      const out = await (await this.ssm()).send(new GetParameterCommand({ Name: name }));
      return out.Parameter?.Value;
    } catch (error) {
      if ((error as Error).name === 'ParameterNotFound') return undefined;
      throw transient(error);
    }
  }

  async put(name: string, value: string, description?: string): Promise<void> {
    const { PutParameterCommand } = await import('@aws-sdk/client-ssm');
    try {
      await (await this.ssm()).send(
        new PutParameterCommand({
          Name: name,
          Value: value,
          Type: 'String',
          Overwrite: true,
          Description: description,
        }),
      );
    } catch (error) {
      throw transient(error);
    }
  }
}

// Throttling and 5xx are worth a Step Functions Retry; anything else (access denied) is a real failure.
function transient(error: unknown): unknown {
  const e = error as Error & { $metadata?: { httpStatusCode?: number }; $retryable?: unknown };
  const status = e.$metadata?.httpStatusCode ?? 0;
  if (e.$retryable || status >= 500 || e.name === 'ThrottlingException' || e.name === 'TooManyUpdates')
    return new StoreTransientError(`SSM: ${e.message}`, { cause: error });
  return error;
}
