import { Aws, Duration, Names, RemovalPolicy } from 'aws-cdk-lib';
import { Match, Rule } from 'aws-cdk-lib/aws-events';
import { SfnStateMachine } from 'aws-cdk-lib/aws-events-targets';
import { PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import {
  Choice,
  Condition,
  CustomState,
  DefinitionBody,
  JitterType,
  JsonPath,
  LogLevel,
  Pass,
  Result,
  StateMachine,
  StateMachineType,
  TaskInput,
  Timeout,
  Wait,
  WaitTime,
} from 'aws-cdk-lib/aws-stepfunctions';
import { LambdaInvoke } from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import type { PipelineConfig } from '../pipeline/config.js';
import { servingFor } from '../tuning/prepare.js';
import {
  TUNING_INCOMING_PREFIX,
  TUNING_OUTPUT_PREFIX,
  tuningManifestKey,
  tuningServingKey,
} from '../tuning/schemas.js';
import { StageFunction, type TuningStage } from './stage-function.js';

/** Properties of a ReverseTuning. */
export interface ReverseTuningProps {
  /** The stack's bucket: training data under `tuning/incoming/`, job output and manifests under `tuning/`. */
  readonly bucket: IBucket;
  /** The configuration; its `tuning` section is part of the definition. */
  readonly config: PipelineConfig;
  /** The SSM parameter the tuned model's spec is written to. */
  readonly parameterName: string;
}

/** How long a customization job may run before the execution gives up on it. */
const JOB_TIMEOUT = Duration.days(7);
/** How often serving is polled while a deployment or provisioned throughput is created. */
const SERVING_POLL = Duration.minutes(1);

/**
 * Stage 0 of the method as a Standard workflow: an upload of reversed training data under
 * `tuning/incoming/` (written by `safer-instruct reverse-data`) starts `PrepareTuning`, which checks the
 * data's format before anything is paid; `CustomizeModel` runs a Bedrock fine-tuning job and waits for it
 * (the `.sync` integration, no compute idles meanwhile); `ServeModel` makes the model invokable as
 * configured, polled every minute; `RecordModel` writes the manifest and the SSM parameter that
 * `models.induce: "ssm:<parameter>"` reads.
 */
export class ReverseTuning extends Construct {
  /** The workflow. */
  readonly stateMachine: StateMachine;
  /** The role Bedrock assumes to read the training data and write the job's output. */
  readonly bedrockRole: Role;
  /** The function of each step. */
  readonly functions: Readonly<Record<TuningStage, StageFunction>>;
  /** Where execution history goes, without execution data. */
  readonly logGroup: LogGroup;
  /** The SSM parameter the tuned model's spec is written to. */
  readonly parameterName: string;

  constructor(scope: Construct, id: string, props: ReverseTuningProps) {
    super(scope, id);
    const { bucket, config, parameterName } = props;
    const tuning = config.tuning;
    const serving = servingFor(tuning);
    this.parameterName = parameterName;
    const arn = (resource: string, account = Aws.ACCOUNT_ID) =>
      `arn:${Aws.PARTITION}:bedrock:${Aws.REGION}:${account}:${resource}`;

    const stepFunction = (stage: TuningStage, name: string) =>
      new StageFunction(this, name, { stage, bucket, accessesRuns: false, timeout: Duration.minutes(5) });
    const functions = {
      'prepare-tuning': stepFunction('prepare-tuning', 'Prepare'),
      'serve-model': stepFunction('serve-model', 'Serve'),
      'record-model': stepFunction('record-model', 'Record'),
    };
    this.functions = functions;
    // Whether a job of this tuning exists already, and how it ended.
    functions['prepare-tuning'].role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['bedrock:GetModelCustomizationJob'],
        resources: [arn('model-customization-job/*')],
      }),
    );
    functions['prepare-tuning'].role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:GetObject'],
        resources: [
          bucket.arnForObjects(`${TUNING_INCOMING_PREFIX}*`),
          bucket.arnForObjects(tuningManifestKey('*')),
        ],
      }),
    );
    functions['record-model'].role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:PutObject'],
        resources: [bucket.arnForObjects(tuningManifestKey('*'))],
      }),
    );
    functions['record-model'].role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['ssm:PutParameter'],
        resources: [
          `arn:${Aws.PARTITION}:ssm:${Aws.REGION}:${Aws.ACCOUNT_ID}:parameter/${parameterName.replace(/^\/+/, '')}`,
        ],
      }),
    );
    const serveRole = functions['serve-model'].role;
    // The record of what was created, written at once and read by every later call.
    serveRole.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:GetObject', 's3:PutObject'],
        resources: [bucket.arnForObjects(tuningServingKey('*'))],
      }),
    );
    // Only when the task's result lacks the output model ARN.
    serveRole.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['bedrock:GetModelCustomizationJob'],
        resources: [arn('model-customization-job/*')],
      }),
    );
    if (serving === 'deployment')
      serveRole.addToPrincipalPolicy(
        new PolicyStatement({
          actions: ['bedrock:CreateCustomModelDeployment', 'bedrock:GetCustomModelDeployment'],
          resources: [arn('custom-model/*'), arn('custom-model-deployment/*')],
        }),
      );
    if (serving === 'provisioned')
      serveRole.addToPrincipalPolicy(
        new PolicyStatement({
          actions: ['bedrock:CreateProvisionedModelThroughput', 'bedrock:GetProvisionedModelThroughput'],
          resources: [arn('custom-model/*'), arn('provisioned-model/*')],
        }),
      );

    // Bedrock reads the training data and writes the job's output as this role, and nothing else.
    this.bedrockRole = new Role(this, 'BedrockRole', {
      description: 'Assumed by Bedrock model customization jobs of ReverseTuning',
      assumedBy: new ServicePrincipal('bedrock.amazonaws.com', {
        conditions: {
          StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID },
          ArnLike: { 'aws:SourceArn': arn('model-customization-job/*') },
        },
      }),
    });
    this.bedrockRole.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:GetObject'],
        resources: [bucket.arnForObjects(`${TUNING_INCOMING_PREFIX}*`)],
      }),
    );
    this.bedrockRole.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:GetObject', 's3:PutObject'],
        resources: [bucket.arnForObjects(`${TUNING_OUTPUT_PREFIX}*`)],
      }),
    );
    this.bedrockRole.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [bucket.bucketArn],
        conditions: {
          StringLike: { 's3:prefix': [`${TUNING_INCOMING_PREFIX}*`, `${TUNING_OUTPUT_PREFIX}*`] },
        },
      }),
    );

    const retries = {
      errors: [
        'StoreTransientError',
        'ModelTransientError',
        'Lambda.TooManyRequestsException',
        'Sandbox.Timedout',
      ],
      interval: Duration.seconds(2),
      backoffRate: 2,
      maxAttempts: 5,
      jitterStrategy: JitterType.FULL,
    };
    // A step's answer is kept as { value } beside the execution's input, the way later steps read it.
    const step = (stateId: string, stage: TuningStage, payload: TaskInput, resultPath: string) =>
      new LambdaInvoke(this, stateId, {
        lambdaFunction: functions[stage].function,
        payload,
        resultSelector: { 'value.$': '$.Payload' },
        resultPath,
        taskTimeout: Timeout.duration(Duration.minutes(5)),
      }).addRetry(retries);

    const prepare = step(
      'PrepareTuning',
      'prepare-tuning',
      TaskInput.fromObject({
        event: JsonPath.entirePayload,
        bucket: bucket.bucketName,
        tuning,
        parameterName,
      }),
      '$.prepared',
    );
    const hyperParameters = Object.keys(tuning.hyperParameters).length
      ? { HyperParameters: tuning.hyperParameters }
      : {};
    const customize = new CustomState(this, 'CustomizeModel', {
      stateJson: {
        Type: 'Task',
        Resource: `arn:${Aws.PARTITION}:states:::bedrock:createModelCustomizationJob.sync`,
        Parameters: {
          BaseModelIdentifier: tuning.baseModel,
          CustomizationType: 'FINE_TUNING',
          'JobName.$': '$.prepared.value.jobName',
          'CustomModelName.$': '$.prepared.value.jobName',
          'ClientRequestToken.$': '$.prepared.value.token',
          RoleArn: this.bedrockRole.roleArn,
          ...hyperParameters,
          TrainingDataConfig: { 'S3Uri.$': '$.prepared.value.trainingUri' },
          OutputDataConfig: { 'S3Uri.$': '$.prepared.value.outputUri' },
        },
        ResultPath: '$.job',
        TimeoutSeconds: JOB_TIMEOUT.toSeconds(),
        Retry: [
          {
            ErrorEquals: [
              'Bedrock.ThrottlingException',
              'Bedrock.InternalServerException',
              'Bedrock.ServiceUnavailableException',
            ],
            IntervalSeconds: 30,
            BackoffRate: 2,
            MaxAttempts: 5,
            JitterStrategy: 'FULL',
          },
        ],
      },
    });
    // JSONPath cannot pass a path that is not there: the first ServeModel call gets status `none`.
    const notServing = new Pass(this, 'ServingNotStarted', {
      result: Result.fromObject({ value: { status: 'none' } }),
      resultPath: '$.served',
    });
    const serve = step(
      'ServeModel',
      'serve-model',
      TaskInput.fromObject({
        prepared: JsonPath.objectAt('$.prepared.value'),
        job: JsonPath.objectAt('$.job'),
        served: JsonPath.objectAt('$.served.value'),
      }),
      '$.served',
    );
    const record = new LambdaInvoke(this, 'RecordModel', {
      lambdaFunction: functions['record-model'].function,
      payload: TaskInput.fromObject({
        prepared: JsonPath.objectAt('$.prepared.value'),
        served: JsonPath.objectAt('$.served.value'),
      }),
      outputPath: '$.Payload',
      taskTimeout: Timeout.duration(Duration.minutes(5)),
    }).addRetry(retries);
    const waitForServing = new Wait(this, 'WaitForServing', { time: WaitTime.duration(SERVING_POLL) });
    const ready = new Choice(this, 'ServingReady', { stateName: 'ServingReady?' })
      .when(Condition.stringEquals('$.served.value.status', 'ready'), record)
      .otherwise(waitForServing.next(serve));

    // An execution that failed after its job completed left a trained model: serve it, do not train again.
    const useFinishedJob = new Pass(this, 'UseFinishedJob', {
      parameters: {
        'JobArn.$': '$.prepared.value.job.JobArn',
        'OutputModelArn.$': '$.prepared.value.job.OutputModelArn',
      },
      resultPath: '$.job',
    });
    // Data tuned before: record that model again, so the parameter points back at it.
    const useRecorded = new Pass(this, 'UseRecorded', {
      parameters: { 'value.$': '$.prepared.value.served' },
      resultPath: '$.served',
    });
    notServing.next(serve).next(ready);
    const alreadyTuned = new Choice(this, 'AlreadyTuned', { stateName: 'AlreadyTuned?' })
      .when(Condition.booleanEquals('$.prepared.value.done', true), useRecorded.next(record))
      .when(Condition.booleanEquals('$.prepared.value.trained', true), useFinishedJob.next(notServing))
      .otherwise(customize.next(notServing));

    this.logGroup = new LogGroup(this, 'Logs', {
      logGroupName: `/aws/vendedlogs/states/${Names.uniqueResourceName(this, { maxLength: 200 })}`,
      retention: RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.stateMachine = new StateMachine(this, 'StateMachine', {
      stateMachineType: StateMachineType.STANDARD,
      definitionBody: DefinitionBody.fromChainable(prepare.next(alreadyTuned)),
      logs: { destination: this.logGroup, level: LogLevel.ALL, includeExecutionData: false },
      tracingEnabled: true,
    });
    // The .sync integration: create the job, then poll it (and stop it when the execution stops).
    this.stateMachine.addToRolePolicy(
      new PolicyStatement({
        actions: ['bedrock:CreateModelCustomizationJob'],
        resources: [
          `arn:${Aws.PARTITION}:bedrock:${Aws.REGION}::foundation-model/${tuning.baseModel}`,
          arn('custom-model/*'),
          arn('model-customization-job/*'),
        ],
      }),
    );
    this.stateMachine.addToRolePolicy(
      new PolicyStatement({
        actions: ['bedrock:GetModelCustomizationJob', 'bedrock:StopModelCustomizationJob'],
        resources: [arn('model-customization-job/*')],
      }),
    );
    this.stateMachine.addToRolePolicy(
      new PolicyStatement({ actions: ['iam:PassRole'], resources: [this.bedrockRole.roleArn] }),
    );

    new Rule(this, 'TrainingDataUploaded', {
      description: `Starts ReverseTuning for each object created under ${TUNING_INCOMING_PREFIX}`,
      eventPattern: {
        source: ['aws.s3'],
        detailType: ['Object Created'],
        detail: {
          bucket: { name: [bucket.bucketName] },
          object: { key: Match.prefix(TUNING_INCOMING_PREFIX) },
        },
      },
      targets: [new SfnStateMachine(this.stateMachine)],
    });
  }
}
