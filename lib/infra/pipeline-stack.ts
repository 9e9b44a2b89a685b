import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import { Match, Rule } from 'aws-cdk-lib/aws-events';
import { SfnStateMachine } from 'aws-cdk-lib/aws-events-targets';
import { BlockPublicAccess, Bucket, BucketEncryption, type CfnBucket } from 'aws-cdk-lib/aws-s3';
import type { Construct } from 'constructs';
import { BATCH_OUTPUT_PREFIX, BATCH_TOKENS_PREFIX } from '../pipeline/batch/batch-service.js';
import type { PipelineConfig } from '../pipeline/config.js';
import { ConfigError } from '../pipeline/errors.js';
import { INCOMING_PREFIX } from '../pipeline/keys.js';
import { DEFAULT_FUNCTION_MEMORY_MB, FUNCTION_MEMORY_MB } from '../pipeline/prices.js';
import { MODEL_STAGES } from '../pipeline/schemas.js';
import { INTERMEDIATE_TAG } from '../pipeline/store/s3-store.js';
import { tuningFormatOf } from '../reverse/formats.js';
import { servingFor } from '../tuning/prepare.js';
import { BatchInference } from './batch-inference.js';
import { PipelineObservability } from './observability.js';
import { PipelineStateMachine } from './pipeline-state-machine.js';
import { ReverseTuning } from './reverse-tuning.js';
import { FUNCTION_STAGES, type FunctionStage, metricsServiceOf, StageFunction } from './stage-function.js';

/**
 * How long a batch job's task-token record is kept: well past the longest job (168 h) and its wait, so the
 * callback finds it, and short enough that records of finished runs do not pile up.
 */
const BATCH_TOKEN_DAYS = 30;

/** The largest configuration a run takes, as JSON: well inside Split's 256 KB payload. */
export const MAX_CONFIG_BYTES = 64_000;

/** Properties of a PipelineStack. */
export interface PipelineStackProps extends StackProps {
  /** The parsed pipeline configuration; its models decide each function's Bedrock access. */
  readonly config: PipelineConfig;
  /**
   * Whether `llama:` model specs are accepted. They run only in-process, so only a template
   * meant for the local engine may carry them.
   * @default false
   */
  readonly allowLocalModels?: boolean;
}

/** The problems that make a configuration unfit for this stack, one line each. */
export function stackConfigProblems(
  config: PipelineConfig,
  allowLocalModels = false,
  parameterName = config.tuning.parameterName,
): string[] {
  const problems: string[] = [];
  const { baseModel, serving } = config.tuning;
  if (baseModel.startsWith('arn:')) problems.push(`tuning.baseModel is an ARN; give the base model's id`);
  else
    try {
      tuningFormatOf(baseModel);
    } catch (error) {
      problems.push(`tuning.baseModel: ${(error as Error).message}`);
    }
  if (serving === 'deployment' && !baseModel.startsWith('amazon.nova-'))
    problems.push(
      `tuning.serving is deployment, but Bedrock deploys custom models on demand for Nova only; ${baseModel} ` +
        'needs provisioned (billed by the hour) or none',
    );
  if (parameterName && servingFor(config.tuning) === 'none')
    for (const [stage, spec] of Object.entries(config.models))
      if (spec === `ssm:${parameterName}`)
        problems.push(
          `models.${stage} is ${spec}, but with tuning.serving none ReverseTuning records a model that cannot be ` +
            'invoked and never writes that parameter; set tuning.serving',
        );
  if (!allowLocalModels) {
    for (const [stage, spec] of Object.entries(config.models)) {
      if (spec.startsWith('llama:')) {
        problems.push(
          `models.${stage} is ${spec}: llama models run only in-process, locally; use a bedrock: or openai: model in AWS`,
        );
      }
    }
  }
  const bytes = Buffer.byteLength(JSON.stringify(config), 'utf8');
  if (bytes > MAX_CONFIG_BYTES) {
    problems.push(
      `the configuration is ${bytes} bytes as JSON, over the ${MAX_CONFIG_BYTES} bytes allowed: it travels ` +
        "in the state machine definition and in Split's payload (256 KB); shorten the prompt templates",
    );
  }
  return problems;
}

/**
 * The serverless pipeline: an upload under `incoming/` in the bucket starts, through EventBridge,
 * a Step Functions run of the seven stage functions; everything a run writes lands under `runs/`.
 * In modes `batch` and `auto`, BatchInference sends model stages' calls as Bedrock batch jobs first.
 * An upload under `tuning/incoming/` starts ReverseTuning, which tunes an induction model.
 */
export class PipelineStack extends Stack {
  /** The bucket of uploads and runs. */
  readonly bucket: Bucket;
  /** The function of each stage. */
  readonly functions: Readonly<Record<FunctionStage, StageFunction>>;
  /** The workflow of a run. */
  readonly pipeline: PipelineStateMachine;
  /** The workflow that tunes an induction model (stage 0). */
  readonly tuning: ReverseTuning;
  /** Bedrock batch inference; only in modes `batch` and `auto`. */
  readonly batch?: BatchInference;
  /** The dashboard of the pipeline's stage metrics, functions and executions. */
  readonly observability: PipelineObservability;

  constructor(scope: Construct, id: string, props: PipelineStackProps) {
    super(scope, id, props);
    const { config } = props;
    const parameterName = config.tuning.parameterName ?? `/${this.stackName}/induce-model`;
    const problems = stackConfigProblems(config, props.allowLocalModels ?? false, parameterName);
    if (problems.length > 0) {
      throw new ConfigError(`${id}: cannot synthesize:\n- ${problems.join('\n- ')}`);
    }
    const batchMode = config.mode !== 'on-demand';

    this.bucket = new Bucket(this, 'Bucket', {
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      encryption: BucketEncryption.S3_MANAGED,
      lifecycleRules: [
        {
          id: 'expire-intermediate',
          tagFilters: { [INTERMEDIATE_TAG.key]: INTERMEDIATE_TAG.value },
          expiration: Duration.days(14),
        },
        ...(batchMode
          ? [
              {
                id: 'expire-batch-tokens',
                prefix: BATCH_TOKENS_PREFIX,
                expiration: Duration.days(BATCH_TOKEN_DAYS),
              },
              // Bedrock cannot tag the outputs it writes: they expire by prefix, as intermediate objects do.
              { id: 'expire-batch-output', prefix: BATCH_OUTPUT_PREFIX, expiration: Duration.days(14) },
            ]
          : []),
        { id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(7) },
      ],
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // The L2 `eventBridgeEnabled: true` sets this through a custom resource with its own Lambda and
    // role; CloudFormation sets it natively on a bucket the stack owns. If S3 event notifications are
    // ever added to this bucket, go back to the L2 prop: CDK's notifications custom resource then
    // writes the bucket's whole notification configuration.
    (this.bucket.node.defaultChild as CfnBucket).notificationConfiguration = {
      eventBridgeConfiguration: { eventBridgeEnabled: true },
    };

    const stageFunction = (stage: FunctionStage) =>
      new StageFunction(this, `${stage[0]?.toUpperCase()}${stage.slice(1)}`, {
        stage,
        bucket: this.bucket,
        readsIncoming: stage === 'split',
        // Dedup holds a MinHash signature per record of the run, and merge one per pair; CPU scales too.
        memorySize: FUNCTION_MEMORY_MB[stage] ?? DEFAULT_FUNCTION_MEMORY_MB,
      });
    const functions = Object.fromEntries(
      FUNCTION_STAGES.map((stage) => [stage, stageFunction(stage)]),
    ) as Record<FunctionStage, StageFunction>;
    for (const stage of MODEL_STAGES) {
      functions[stage].allowModels([config.models[stage]], this.bucket);
    }
    // Split reads the parameters of `ssm:` specs once per run and pins the models they name.
    functions.split.allowParameters(
      Object.values(config.models).flatMap((spec) =>
        spec.startsWith('ssm:') ? [spec.slice('ssm:'.length)] : [],
      ),
    );
    this.functions = functions;

    if (batchMode) this.batch = new BatchInference(this, 'BatchInference', { bucket: this.bucket, config });

    this.pipeline = new PipelineStateMachine(this, 'Pipeline', {
      functions: {
        split: functions.split.function,
        dedup: functions.dedup.function,
        induce: functions.induce.function,
        filter: functions.filter.function,
        respond: functions.respond.function,
        evaluate: functions.evaluate.function,
        merge: functions.merge.function,
      },
      config,
      batchFunction: this.batch?.functions.batch.function,
    });
    this.batch?.allowTaskResponse(this.pipeline.stateMachine);

    this.observability = new PipelineObservability(this, 'Observability', {
      stateMachine: this.pipeline.stateMachine,
      functions: {
        ...Object.fromEntries(FUNCTION_STAGES.map((stage) => [stage, functions[stage].function])),
        ...(this.batch
          ? Object.fromEntries(
              Object.entries(this.batch.functions).map(([stage, fn]) => [stage, fn.function]),
            )
          : {}),
      },
      service: metricsServiceOf(this),
      batch: batchMode,
    });

    new Rule(this, 'InputUploaded', {
      description: `Starts a pipeline run for each object created under ${INCOMING_PREFIX}`,
      eventPattern: {
        source: ['aws.s3'],
        detailType: ['Object Created'],
        detail: {
          bucket: { name: [this.bucket.bucketName] },
          object: { key: Match.prefix(INCOMING_PREFIX) },
        },
      },
      targets: [new SfnStateMachine(this.pipeline.stateMachine)],
    });

    this.tuning = new ReverseTuning(this, 'ReverseTuning', {
      bucket: this.bucket,
      config,
      parameterName,
    });

    new CfnOutput(this, 'BucketName', { value: this.bucket.bucketName });
    new CfnOutput(this, 'ReverseTuningArn', { value: this.tuning.stateMachine.stateMachineArn });
    new CfnOutput(this, 'InduceModelParameter', { value: this.tuning.parameterName });
    new CfnOutput(this, 'StateMachineArn', { value: this.pipeline.stateMachine.stateMachineArn });
    new CfnOutput(this, 'DashboardName', { value: this.observability.dashboard.dashboardName });
    if (this.batch) new CfnOutput(this, 'BatchRoleArn', { value: this.batch.serviceRole.roleArn });
  }
}
