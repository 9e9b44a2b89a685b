import {
  CreateCustomModelDeploymentCommand,
  CreateProvisionedModelThroughputCommand,
  GetCustomModelDeploymentCommand,
  GetModelCustomizationJobCommand,
  GetProvisionedModelThroughputCommand,
} from '@aws-sdk/client-bedrock';
import { ModelTransientError } from '../pipeline/errors.js';
import type { TuningDeps } from './deps.js';
import { CustomizationJob, type Served, type ServeModelInput, tuningServingKey } from './schemas.js';

/** Bedrock could not make the tuned model invokable: the deployment or provisioned throughput failed. */
export class ServingFailedError extends Error {
  override name = 'ServingFailedError';
}

/** Polls (one a minute) before serving that is still being created is given up on. */
export const MAX_SERVING_POLLS = 360;

const TRANSIENT = new Set([
  'ThrottlingException',
  'InternalServerException',
  'ServiceUnavailableException',
  'TooManyRequestsException',
]);

/** A Bedrock control-plane error as the workflow retries it: throttling and 5xx become ModelTransientError. */
export function bedrockTransient(error: unknown): unknown {
  const e = error as Error & { $metadata?: { httpStatusCode?: number } };
  if (TRANSIENT.has(e.name) || (e.$metadata?.httpStatusCode ?? 0) >= 500)
    return new ModelTransientError(`Bedrock: ${e.name}: ${e.message}`, { cause: error });
  return error;
}

/** The customization job's output model, from the task's result or, when it lacks it, from Bedrock. */
async function customModelOf(input: ServeModelInput, send: TuningDeps['bedrock']) {
  if (input.served) return { customModelArn: input.served.customModelArn, jobArn: input.served.jobArn };
  const job = CustomizationJob.parse(input.job ?? {});
  if (job.outputModelArn) return { customModelArn: job.outputModelArn, jobArn: job.jobArn };
  if (!job.jobArn)
    throw new ServingFailedError('the customization task returned neither a job nor a model ARN');
  const described = await send().send(new GetModelCustomizationJobCommand({ jobIdentifier: job.jobArn }));
  if (!described.outputModelArn)
    throw new ModelTransientError(
      `customization job ${job.jobArn} has no output model yet (${described.status})`,
    );
  return { customModelArn: described.outputModelArn, jobArn: job.jobArn };
}

/**
 * Makes the tuned model invokable as configured, one step per call so the state machine waits between
 * calls without paying for idle compute. The first call creates the deployment or Provisioned Throughput
 * (with the tuning's token) and records its ARN in the bucket at once; later calls, and a later execution
 * of the same tuning, find that record and only read the status until it is ready. With serving `none`
 * the custom model itself is the answer.
 */
export async function serveModel(input: ServeModelInput, deps: TuningDeps): Promise<Served> {
  try {
    return await serve(input, deps);
  } catch (error) {
    throw bedrockTransient(error);
  }
}

async function serve(input: ServeModelInput, deps: TuningDeps): Promise<Served> {
  const { prepared } = input;
  const { customModelArn, jobArn } = await customModelOf(input, deps.bedrock);
  const base = { customModelArn, ...(jobArn ? { jobArn } : {}) };
  if (prepared.serving === 'none') return { status: 'ready', ...base, invokeArn: customModelArn };

  const bedrock = deps.bedrock();
  const recordKey = tuningServingKey(prepared.jobName);
  const recorded = input.served?.servingArn ?? (await deps.store.tryGet(recordKey));
  const servingArn =
    recorded ??
    (prepared.serving === 'deployment'
      ? (
          await bedrock.send(
            new CreateCustomModelDeploymentCommand({
              modelDeploymentName: prepared.jobName,
              modelArn: customModelArn,
              clientRequestToken: prepared.token,
              description: `safer-instruct induction model, tuned on ${prepared.key}`,
            }),
          )
        ).customModelDeploymentArn
      : (
          await bedrock.send(
            new CreateProvisionedModelThroughputCommand({
              provisionedModelName: prepared.jobName,
              modelId: customModelArn,
              modelUnits: prepared.modelUnits,
              clientRequestToken: prepared.token,
            }),
          )
        ).provisionedModelArn);
  if (!servingArn)
    throw new ServingFailedError(`Bedrock returned no ARN for the ${prepared.serving} of ${customModelArn}`);
  if (recorded === undefined) await deps.store.put(recordKey, servingArn);

  const { status, failureMessage } =
    prepared.serving === 'deployment'
      ? await bedrock.send(
          new GetCustomModelDeploymentCommand({ customModelDeploymentIdentifier: servingArn }),
        )
      : await bedrock.send(new GetProvisionedModelThroughputCommand({ provisionedModelId: servingArn }));
  if (status === 'Failed')
    throw new ServingFailedError(
      `${prepared.serving} ${servingArn} failed: ${failureMessage ?? 'no reason given'}`,
    );
  if (status === 'Active' || status === 'InService')
    return { status: 'ready', ...base, servingArn, invokeArn: servingArn };
  const polls = (input.served?.polls ?? 0) + 1;
  if (polls > MAX_SERVING_POLLS)
    throw new ServingFailedError(
      `${prepared.serving} ${servingArn} is still ${status} after ${MAX_SERVING_POLLS} minutes; it is left as it ` +
        `is and recorded in ${recordKey}: delete it in Bedrock if it should not be kept`,
    );
  return { status: 'creating', ...base, servingArn, polls };
}
