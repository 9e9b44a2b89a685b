import {
  CreateCustomModelDeploymentCommand,
  CreateProvisionedModelThroughputCommand,
  GetCustomModelDeploymentCommand,
  GetModelCustomizationJobCommand,
  GetProvisionedModelThroughputCommand,
} from '@aws-sdk/client-bedrock';
import { ModelTransientError } from '../pipeline/errors.js';
import type { TuningDeps } from './deps.js';
import { CustomizationJob, type Served, type ServeModelInput } from './schemas.js';

/** Bedrock could not make the tuned model invokable: the deployment or provisioned throughput failed. */
export class ServingFailedError extends Error {
  override name = 'ServingFailedError';
}

/** The customization job's output model, from the task's result or, when it lacks it, from Bedrock. */
async function customModelOf(input: ServeModelInput, deps: TuningDeps) {
  if (input.served) return { customModelArn: input.served.customModelArn, jobArn: input.served.jobArn };
  const job = CustomizationJob.parse(input.job ?? {});
  if (job.outputModelArn) return { customModelArn: job.outputModelArn, jobArn: job.jobArn };
  if (!job.jobArn)
    throw new ServingFailedError('the customization task returned neither a job nor a model ARN');
  const described = await deps
    .bedrock()
    .send(new GetModelCustomizationJobCommand({ jobIdentifier: job.jobArn }));
  if (!described.outputModelArn)
    throw new ModelTransientError(
      `customization job ${job.jobArn} has no output model yet (${described.status})`,
    );
  return { customModelArn: described.outputModelArn, jobArn: job.jobArn };
}

/**
 * Makes the tuned model invokable as configured, one step per call so the state machine waits between
 * calls without paying for idle compute: the first call creates the deployment or provisioned throughput
 * (idempotently, with the tuning's token), later calls read its status until it is ready. With serving
 * `none` the custom model itself is the answer.
 */
export async function serveModel(input: ServeModelInput, deps: TuningDeps): Promise<Served> {
  const { prepared } = input;
  const { customModelArn, jobArn } = await customModelOf(input, deps);
  const base = { customModelArn, ...(jobArn ? { jobArn } : {}) };
  if (prepared.serving === 'none') return { status: 'ready', ...base, invokeArn: customModelArn };

  const bedrock = deps.bedrock();
  if (prepared.serving === 'deployment') {
    const servingArn =
      input.served?.servingArn ??
      (
        await bedrock.send(
          new CreateCustomModelDeploymentCommand({
            modelDeploymentName: prepared.jobName,
            modelArn: customModelArn,
            clientRequestToken: prepared.token,
            description: `safer-instruct induction model, tuned on ${prepared.key}`,
          }),
        )
      ).customModelDeploymentArn;
    if (!servingArn) throw new ServingFailedError('CreateCustomModelDeployment returned no ARN');
    const got = await bedrock.send(
      new GetCustomModelDeploymentCommand({ customModelDeploymentIdentifier: servingArn }),
    );
    if (got.status === 'Failed')
      throw new ServingFailedError(
        `custom model deployment ${servingArn} failed: ${got.failureMessage ?? 'no reason given'}`,
      );
    return got.status === 'Active'
      ? { status: 'ready', ...base, servingArn, invokeArn: servingArn }
      : { status: 'creating', ...base, servingArn };
  }

  const servingArn =
    input.served?.servingArn ??
    (
      await bedrock.send(
        new CreateProvisionedModelThroughputCommand({
          provisionedModelName: prepared.jobName,
          modelId: customModelArn,
          modelUnits: prepared.modelUnits,
          clientRequestToken: prepared.token,
        }),
      )
    ).provisionedModelArn;
  if (!servingArn) throw new ServingFailedError('CreateProvisionedModelThroughput returned no ARN');
  const got = await bedrock.send(
    new GetProvisionedModelThroughputCommand({ provisionedModelId: servingArn }),
  );
  if (got.status === 'Failed')
    throw new ServingFailedError(
      `provisioned throughput ${servingArn} failed: ${got.failureMessage ?? 'no reason given'}`,
    );
  return got.status === 'InService'
    ? { status: 'ready', ...base, servingArn, invokeArn: servingArn }
    : { status: 'creating', ...base, servingArn };
}
