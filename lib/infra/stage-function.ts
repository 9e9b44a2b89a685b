import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Aws, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { LogLevel, NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IBucket } from 'aws-cdk-lib/aws-s3';
import { Construct, type IConstruct } from 'constructs';
import { ENV_KEYS } from '../pipeline/env.js';
import { CALL_CACHE_PREFIX, INCOMING_PREFIX, runPrefix } from '../pipeline/keys.js';
import { METRICS_NAMESPACE, POWERTOOLS_ENV } from '../pipeline/observability.js';
import { MODEL_STAGES } from '../pipeline/schemas.js';

/** Every stage that runs as a Lambda function, in pipeline order. */
export const FUNCTION_STAGES = ['split', 'dedup', ...MODEL_STAGES, 'merge'] as const;
/** One of FUNCTION_STAGES. */
export type FunctionStage = (typeof FUNCTION_STAGES)[number];
/** The steps of ReverseTuning that run as Lambda functions. */
export const TUNING_STAGES = ['prepare-tuning', 'serve-model', 'record-model'] as const;
/** One of TUNING_STAGES. */
export type TuningStage = (typeof TUNING_STAGES)[number];
/** The functions of Bedrock batch inference: `batch` plans, submits and joins jobs; `batch-callback` ends their waits. */
export const BATCH_STAGES = ['batch', 'batch-callback'] as const;
/** One of BATCH_STAGES. */
export type BatchStage = (typeof BATCH_STAGES)[number];

/**
 * What a tuned model can be invoked as: ReverseTuning writes one of these ARNs of this account and
 * region into the parameter an `ssm:` spec names, and the ARN is known only then.
 */
export const TUNED_MODEL_RESOURCES = [
  'custom-model',
  'provisioned-model',
  'imported-model',
  'custom-model-deployment',
] as const;

/** The ARN pattern of one kind of tuned model in this account and region. */
export const tunedModelArn = (resource: (typeof TUNED_MODEL_RESOURCES)[number]) =>
  `arn:${Aws.PARTITION}:bedrock:${Aws.REGION}:${Aws.ACCOUNT_ID}:${resource}/*`;

/** The ARN of an SSM parameter of this account and region, by its name. */
export const parameterArn = (name: string) =>
  `arn:${Aws.PARTITION}:ssm:${Aws.REGION}:${Aws.ACCOUNT_ID}:parameter/${name.replace(/^\/+/, '')}`;

/** The SageMaker endpoint ARN `sagemaker:InvokeEndpoint` needs for a `sagemaker:` spec; none for others. */
export function sagemakerEndpointArns(spec: string): string[] {
  if (!spec.startsWith('sagemaker:')) return [];
  const endpoint = spec.slice('sagemaker:'.length).split('#')[0] ?? '';
  // Endpoint ARNs are lowercase whatever the name's case.
  return [
    `arn:${Aws.PARTITION}:sagemaker:${Aws.REGION}:${Aws.ACCOUNT_ID}:endpoint/${endpoint.toLowerCase()}`,
  ];
}

/** Prefixes of Bedrock cross-region inference profile ids. */
export const INFERENCE_PROFILE_PREFIXES = [
  'us.',
  'eu.',
  'apac.',
  'global.',
  'jp.',
  'au.',
  'ca.',
  'us-gov.',
] as const;

/**
 * The resource ARNs `bedrock:InvokeModel` needs for one model spec; none for a non-Bedrock spec.
 * A cross-region inference profile also needs its foundation model in every region it routes to.
 */
export function bedrockModelArns(spec: string): string[] {
  if (spec.startsWith('ssm:')) return TUNED_MODEL_RESOURCES.map(tunedModelArn);
  const provider = ['bedrock:', 'bedrock-custom:'].find((p) => spec.startsWith(p));
  if (!provider) return [];
  const rest = spec.slice(provider.length);
  const id = provider === 'bedrock-custom:' ? rest.replace(/#[a-z]+$/, '') : rest;
  if (id.startsWith('arn:')) return [id];
  const prefix = INFERENCE_PROFILE_PREFIXES.find((p) => id.startsWith(p));
  if (prefix === undefined) return [`arn:${Aws.PARTITION}:bedrock:${Aws.REGION}::foundation-model/${id}`];
  return [
    `arn:${Aws.PARTITION}:bedrock:${Aws.REGION}:${Aws.ACCOUNT_ID}:inference-profile/${id}`,
    `arn:${Aws.PARTITION}:bedrock:*::foundation-model/${id.slice(prefix.length)}`,
  ];
}

/** Properties of a StageFunction. */
export interface StageFunctionProps {
  /** The stage this function runs; picks the entry `lambdas/<stage>.ts` and sets `STAGE`. */
  readonly stage: FunctionStage | TuningStage | BatchStage;
  /** The run bucket: a pipeline stage reads and writes `runs/*`. */
  readonly bucket: IBucket;
  /**
   * Whether the function reads and writes the objects of runs; ReverseTuning's steps do not.
   * @default true
   */
  readonly accessesRuns?: boolean;
  /**
   * Whether the function reads uploads under `incoming/`; only `split` does.
   * @default false
   */
  readonly readsIncoming?: boolean;
  /**
   * Memory in MB; CPU scales with it, and JSONL parsing of a shard is CPU-bound.
   * @default 1024
   */
  readonly memorySize?: number;
  /**
   * The function timeout.
   * @default Duration.minutes(15)
   */
  readonly timeout?: Duration;
}

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * The `service` of a stack's logs and metrics: its name, so two deployments in one account keep their
 * metrics apart; the dashboard reads the metrics under it.
 */
export const metricsServiceOf = (scope: IConstruct): string => Stack.of(scope).stackName;

/**
 * One pipeline stage as a Lambda function, with every default in one place: nodejs22.x on arm64,
 * X-Ray tracing, its own log group (where its JSON logs and EMF metrics go: no PutMetricData grant),
 * an ESM bundle with source maps, the stage and Powertools environment and least-privilege access to
 * the run bucket.
 */
export class StageFunction extends Construct {
  /** The Lambda function. */
  readonly function: NodejsFunction;
  /** The function's execution role. */
  readonly role: Role;
  /** The function's log group. */
  readonly logGroup: LogGroup;
  /** The stage this function runs. */
  readonly stage: FunctionStage | TuningStage | BatchStage;
  private readonly granted: string[] = [];
  private callCache = false;

  constructor(scope: Construct, id: string, props: StageFunctionProps) {
    super(scope, id);
    this.stage = props.stage;
    this.logGroup = new LogGroup(this, 'Logs', {
      retention: RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // An own role instead of the default one: the default attaches AWSLambdaBasicExecutionRole,
    // which may write to any log group; this one writes only to its own.
    this.role = new Role(this, 'Role', { assumedBy: new ServicePrincipal('lambda.amazonaws.com') });
    this.logGroup.grantWrite(this.role);

    this.function = new NodejsFunction(this, 'Function', {
      entry: fileURLToPath(new URL(`../../lambdas/${props.stage}.ts`, import.meta.url)),
      // Found from this file, not the working directory: the CLI synthesizes from anywhere.
      projectRoot: REPO_ROOT,
      depsLockFilePath: join(REPO_ROOT, 'package-lock.json'),
      handler: 'handler',
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      tracing: Tracing.ACTIVE,
      role: this.role,
      logGroup: this.logGroup,
      memorySize: props.memorySize ?? 1024,
      timeout: props.timeout ?? Duration.minutes(15),
      environment: {
        [ENV_KEYS.stage]: props.stage,
        [ENV_KEYS.bucket]: props.bucket.bucketName,
        // Powertools' structured logs and EMF metrics (lib/pipeline/observability.ts).
        [POWERTOOLS_ENV.service]: metricsServiceOf(this),
        [POWERTOOLS_ENV.namespace]: METRICS_NAMESPACE,
        NODE_OPTIONS: '--enable-source-maps',
      },
      bundling: {
        format: OutputFormat.ESM,
        sourceMap: true,
        // Stack traces keep file and line without inlined sources; the smaller map loads faster.
        sourcesContent: false,
        target: 'node22',
        mainFields: ['module', 'main'],
        // Bundled CommonJS dependencies call require(), which ESM lacks.
        banner:
          "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
        // In-process models never run in Lambda; the code imports node-llama-cpp lazily.
        externalModules: ['node-llama-cpp'],
        logLevel: LogLevel.WARNING,
      },
    });

    // ListBucket makes a missing key answer 404 instead of 403, which the store relies on.
    this.role.addToPrincipalPolicy(
      new PolicyStatement({ actions: ['s3:ListBucket'], resources: [props.bucket.bucketArn] }),
    );
    if (props.accessesRuns ?? true) this.grantBucket(props.bucket, props.readsIncoming ?? false);
  }

  /**
   * Lets the function call `bedrock:InvokeModel` on exactly the models of the `bedrock:` and
   * `bedrock-custom:` specs, the tuned models of this account for an `ssm:` spec, and
   * `sagemaker:InvokeEndpoint` on the endpoints of `sagemaker:` specs (openai and llama specs grant no
   * model access); and read and write the call cache.
   */
  allowModels(modelSpecs: readonly string[], bucket: IBucket): void {
    const arns = [...new Set(modelSpecs.flatMap(bedrockModelArns))];
    this.granted.push(...modelSpecs);
    this.allowCallCache(bucket);
    if (arns.length > 0)
      this.role.addToPrincipalPolicy(
        new PolicyStatement({ actions: ['bedrock:InvokeModel'], resources: arns }),
      );
    const endpoints = [...new Set(modelSpecs.flatMap(sagemakerEndpointArns))];
    if (endpoints.length > 0)
      this.role.addToPrincipalPolicy(
        new PolicyStatement({ actions: ['sagemaker:InvokeEndpoint'], resources: endpoints }),
      );
  }

  /**
   * Lets the function read and write answered model calls under `cache/calls/`, without invoking any model:
   * `allowModels` grants it too, and the `batch` function, which puts batch answers there, needs only this.
   */
  allowCallCache(bucket: IBucket): void {
    if (this.callCache) return;
    this.callCache = true;
    this.role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:GetObject', 's3:PutObject'],
        resources: [bucket.arnForObjects(`${CALL_CACHE_PREFIX}*`)],
      }),
    );
  }

  /** Whether the function may read and write the call cache. */
  get usesCallCache(): boolean {
    return this.callCache;
  }

  /** Lets the function read the SSM parameters that `ssm:` model specs name. */
  allowParameters(names: readonly string[]): void {
    if (names.length === 0) return;
    this.role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['ssm:GetParameter'],
        resources: [...new Set(names)].map(parameterArn),
      }),
    );
  }

  /** The model specs granted so far through `allowModels`. */
  get modelSpecs(): readonly string[] {
    return [...this.granted];
  }

  private grantBucket(bucket: IBucket, readsIncoming: boolean): void {
    this.role.addToPrincipalPolicy(
      new PolicyStatement({
        // PutObjectTagging: intermediate objects carry the lifecycle tag. AbortMultipartUpload:
        // a failed streamed write must not leave its parts behind.
        actions: ['s3:GetObject', 's3:PutObject', 's3:PutObjectTagging', 's3:AbortMultipartUpload'],
        resources: [bucket.arnForObjects(runPrefix('*'))],
      }),
    );
    if (readsIncoming) {
      this.role.addToPrincipalPolicy(
        new PolicyStatement({
          actions: ['s3:GetObject'],
          resources: [bucket.arnForObjects(`${INCOMING_PREFIX}*`)],
        }),
      );
    }
  }
}
