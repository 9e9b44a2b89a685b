import { Aws, Duration } from 'aws-cdk-lib';
import { Rule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import { PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import type { IStateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { BATCH_OUTPUT_PREFIX, BATCH_TOKENS_PREFIX, batchKey } from '../pipeline/batch/batch-service.js';
import type { PipelineConfig } from '../pipeline/config.js';
import { ENV_KEYS } from '../pipeline/env.js';
import { runPrefix } from '../pipeline/keys.js';
import { FUNCTION_MEMORY_MB } from '../pipeline/prices.js';
import type { ModelStage } from '../pipeline/schemas.js';
import {
  type BatchStage,
  bedrockModelArns,
  INFERENCE_PROFILE_PREFIXES,
  StageFunction,
} from './stage-function.js';

/** Every batch inference job of this account and region: a job's ARN is known only once it is created. */
export const BATCH_JOB_ARNS = `arn:${Aws.PARTITION}:bedrock:${Aws.REGION}:${Aws.ACCOUNT_ID}:model-invocation-job/*`;

// Run ids, stages and job names are known only at run time; the patterns follow batchKey's layout.
const anyJob = (file: string) => batchKey('*', '*' as ModelStage, '*', file);
/** The input of any job, as a key pattern: `runs/<runId>/batch/<stage>/<jobName>/input.jsonl`. */
export const BATCH_INPUT_KEYS = anyJob('input.jsonl');
/** What any job writes, as a key pattern: everything under `batch-output/`. */
export const BATCH_OUTPUT_KEYS = `${BATCH_OUTPUT_PREFIX}*`;
/** The task-token records of submitted jobs, as a key pattern. */
export const BATCH_TOKEN_KEYS = `${BATCH_TOKENS_PREFIX}*`;

/** The EventBridge `source` and `detail-type` of a batch job's change of state. */
export const BATCH_JOB_EVENT = {
  source: 'aws.bedrock',
  detailType: 'Batch Inference Job State Change',
} as const;

/** The models a batch job may run on: Bedrock takes batch jobs of `bedrock:` (Converse) specs only. */
export const batchModelSpecs = (config: PipelineConfig): string[] => [
  ...new Set(Object.values(config.models).filter((spec) => spec.startsWith('bedrock:'))),
];

/** Properties of a BatchInference. */
export interface BatchInferenceProps {
  /** The run bucket: jobs read and write under `runs/<runId>/batch/`, task tokens are kept under `batch-jobs/`. */
  readonly bucket: IBucket;
  /** The configuration; the `bedrock:` models of its stages are those a job may run on. */
  readonly config: PipelineConfig;
}

/**
 * Bedrock batch inference for modes `batch` and `auto`. The `batch` function plans a model stage's calls
 * into jobs, submits each with the task token of the workflow's wait, stops an overdue one and joins the
 * answers into the call cache; it never invokes a model. Bedrock runs each job as `serviceRole`, which
 * reads the job's input and writes its output and nothing else. A job's state change reaches
 * `batch-callback` through an EventBridge rule, and the callback ends the wait; nothing idles meanwhile.
 *
 * The workflow references the `batch` function, so the callback's right to answer the wait is granted
 * afterwards, with `allowTaskResponse`, once the state machine exists.
 */
export class BatchInference extends Construct {
  /** The function of each batch step. */
  readonly functions: Readonly<Record<BatchStage, StageFunction>>;
  /** The role Bedrock assumes to run the jobs. */
  readonly serviceRole: Role;
  /** The rule sending Bedrock's batch job state changes to `batch-callback`. */
  readonly rule: Rule;
  /** The model ARNs a job may be created on: those of the configuration's `bedrock:` specs. */
  readonly modelArns: readonly string[];

  constructor(scope: Construct, id: string, props: BatchInferenceProps) {
    super(scope, id);
    const { bucket, config } = props;
    this.modelArns = [...new Set(batchModelSpecs(config).flatMap(bedrockModelArns))];

    this.serviceRole = new Role(this, 'ServiceRole', {
      description: 'Assumed by Bedrock batch inference jobs of the pipeline',
      assumedBy: new ServicePrincipal('bedrock.amazonaws.com', {
        conditions: {
          StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID },
          ArnLike: { 'aws:SourceArn': BATCH_JOB_ARNS },
        },
      }),
    });
    this.serviceRole.addToPrincipalPolicy(
      new PolicyStatement({ actions: ['s3:GetObject'], resources: [bucket.arnForObjects(BATCH_INPUT_KEYS)] }),
    );
    this.serviceRole.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:PutObject'],
        resources: [bucket.arnForObjects(BATCH_OUTPUT_KEYS)],
      }),
    );
    this.serviceRole.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': [`${runPrefix('*')}/batch/*`, BATCH_OUTPUT_KEYS] } },
      }),
    );
    // A job on a cross-region inference profile runs its records under this role in every region the
    // profile routes to: Bedrock requires InvokeModel on the profile and its model there. Plain model ids
    // need nothing more.
    const profileArns = [
      ...new Set(
        batchModelSpecs(config)
          .filter((spec) => INFERENCE_PROFILE_PREFIXES.some((p) => spec.startsWith(`bedrock:${p}`)))
          .flatMap(bedrockModelArns),
      ),
    ];
    if (profileArns.length > 0)
      this.serviceRole.addToPrincipalPolicy(
        new PolicyStatement({ actions: ['bedrock:InvokeModel'], resources: profileArns }),
      );

    // Planning reads every shard of a stage and writes its job inputs; joining parses whole job outputs.
    const batch = new StageFunction(this, 'Batch', {
      stage: 'batch',
      bucket,
      memorySize: FUNCTION_MEMORY_MB.batch,
    });
    batch.allowCallCache(bucket);
    batch.role.addToPrincipalPolicy(
      new PolicyStatement({ actions: ['s3:PutObject'], resources: [bucket.arnForObjects(BATCH_TOKEN_KEYS)] }),
    );
    batch.role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:GetObject'],
        resources: [bucket.arnForObjects(BATCH_OUTPUT_KEYS)],
      }),
    );
    batch.role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['bedrock:CreateModelInvocationJob'],
        resources: [BATCH_JOB_ARNS, ...this.modelArns],
      }),
    );
    batch.role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['bedrock:GetModelInvocationJob', 'bedrock:StopModelInvocationJob'],
        resources: [BATCH_JOB_ARNS],
      }),
    );
    // ListModelInvocationJobs supports no resource-level permissions; a submit whose response was lost
    // finds its job by name with it.
    batch.role.addToPrincipalPolicy(
      new PolicyStatement({ actions: ['bedrock:ListModelInvocationJobs'], resources: ['*'] }),
    );
    batch.role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['iam:PassRole'],
        resources: [this.serviceRole.roleArn],
        conditions: { StringEquals: { 'iam:PassedToService': 'bedrock.amazonaws.com' } },
      }),
    );
    batch.function.addEnvironment(ENV_KEYS.batchRole, this.serviceRole.roleArn);

    const callback = new StageFunction(this, 'Callback', {
      stage: 'batch-callback',
      bucket,
      accessesRuns: false,
      memorySize: FUNCTION_MEMORY_MB['batch-callback'],
      timeout: Duration.minutes(1),
    });
    callback.role.addToPrincipalPolicy(
      new PolicyStatement({ actions: ['s3:GetObject'], resources: [bucket.arnForObjects(BATCH_TOKEN_KEYS)] }),
    );
    this.functions = { batch, 'batch-callback': callback };

    // Lambda retries a failed asynchronous invocation twice more, and the target's retry policy covers
    // delivery. An event lost for good leaves the wait to the task's timeout, after which the workflow
    // asks `batch` for the job's state: no dead-letter queue is needed to recover.
    this.rule = new Rule(this, 'JobStateChanged', {
      description: 'Sends the state changes of Bedrock batch inference jobs to the batch callback',
      eventPattern: { source: [BATCH_JOB_EVENT.source], detailType: [BATCH_JOB_EVENT.detailType] },
      targets: [new LambdaFunction(callback.function, { retryAttempts: 8, maxEventAge: Duration.hours(24) })],
    });
  }

  /**
   * Lets `batch-callback` end the workflow's waits on jobs of this state machine. Called once the state
   * machine exists: it references the `batch` function, the callback is referenced by nothing in it.
   * SendTaskSuccess only (not grantTaskResponse's failure and heartbeat): a job that failed is an
   * answer too, which the workflow sends on-demand.
   */
  allowTaskResponse(stateMachine: IStateMachine): void {
    stateMachine.grant(this.functions['batch-callback'].role, 'states:SendTaskSuccess');
  }
}
