import { Aws, Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';
import { CALL_CACHE_PREFIX, INCOMING_PREFIX, runPrefix } from '../pipeline/keys.js';
import {
  TUNING_INCOMING_PREFIX,
  TUNING_OUTPUT_PREFIX,
  tuningManifestKey,
  tuningServingKey,
} from '../tuning/schemas.js';
import { BATCH_INPUT_KEYS, BATCH_JOB_ARNS, BATCH_OUTPUT_KEYS, BATCH_TOKEN_KEYS } from './batch-inference.js';
import type { PipelineStack } from './pipeline-stack.js';
import { bedrockModelArns } from './stage-function.js';

/**
 * A resolved CloudFormation value as cdk-nag writes it into a finding id:
 * `Ref X` -> `<X>`, `Fn::GetAtt [X, Y]` -> `<X.Y>`, `Fn::Join` joined.
 */
function flatten(value: unknown): string {
  if (typeof value === 'string') return value;
  const obj = value as Record<string, unknown>;
  if ('Fn::Join' in obj) {
    const [sep, parts] = obj['Fn::Join'] as [string, unknown[]];
    return parts.map(flatten).join(sep);
  }
  if ('Ref' in obj) return `<${obj.Ref}>`;
  if ('Fn::GetAtt' in obj) {
    const [id, attr] = obj['Fn::GetAtt'] as [string, string];
    return `<${id}.${attr}>`;
  }
  return JSON.stringify(value);
}

/** The AwsSolutions-IAM5 finding id of one wildcard resource ARN of the stack. */
const wildcardResource = (stack: PipelineStack, arn: string) =>
  `AwsSolutions-IAM5[Resource::${flatten(stack.resolve(arn))}]`;

const acknowledge = (scope: IConstruct, id: string, reason: string) =>
  Validations.of(scope).acknowledge({ id, reason });

/**
 * Acknowledges, by exact finding id and on the narrowest construct, the AwsSolutions findings this
 * stack keeps on purpose. Everything else is fixed in the constructs; any new error-level finding
 * fails synth.
 */
export function applyNagAcknowledgements(stack: PipelineStack): void {
  acknowledge(
    stack.bucket,
    'AwsSolutions-S1',
    'Server access logs would need a second bucket; this one is private, SSL-only and written only by ' +
      "the pipeline's roles. Turn on CloudTrail S3 data events for an access audit.",
  );

  for (const fn of Object.values(stack.functions)) {
    acknowledge(
      fn.role,
      'AwsSolutions-IAM5[Resource::*]',
      'Lambda active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no resource-level ' +
        'permissions. The test asserts no other statement of a stage role has Resource "*".',
    );
    acknowledge(
      fn.role,
      wildcardResource(stack, stack.bucket.arnForObjects(runPrefix('*'))),
      'A stage reads and writes the objects of a run under runs/<runId>/, and run ids are known only at run ' +
        'time; the grant is object-level Get/Put/PutTagging/AbortMultipartUpload, no delete.',
    );
    acknowledge(
      fn.function,
      'AwsSolutions-L1',
      'nodejs22.x is pinned on purpose: the bundles target node22 and the code is tested on Node 20-22. ' +
        'Moving to nodejs24.x is a deliberate change with its own test run.',
    );
    if (fn.usesCallCache) acknowledgeCallCache(stack, fn.role);
    for (const spec of fn.modelSpecs)
      for (const arn of bedrockModelArns(spec).filter((a) => a.includes('*')))
        acknowledge(
          fn.role,
          wildcardResource(stack, arn),
          spec.startsWith('ssm:')
            ? `${spec} names the model ReverseTuning recorded, known only when a run starts: the grant is ` +
                "InvokeModel on this account's tuned models of that kind in this region."
            : PROFILE_REASON,
        );
  }
  acknowledge(
    stack.functions.split.role,
    wildcardResource(stack, stack.bucket.arnForObjects(`${INCOMING_PREFIX}*`)),
    'split reads the uploaded input, whose key is known only when the upload event arrives; read-only.',
  );

  applyTuningAcknowledgements(stack);
  applyBatchAcknowledgements(stack);

  const machine = stack.pipeline.stateMachine;
  acknowledge(
    machine.role,
    'AwsSolutions-IAM5[Resource::*]',
    'Execution logging and tracing: the CloudWatch Logs delivery actions (logs:CreateLogDelivery and ' +
      'friends) and the X-Ray writes support no resource-level permissions.',
  );
  for (const fn of Object.values(stack.functions)) {
    acknowledge(
      machine.role,
      wildcardResource(stack, `${fn.function.functionArn}:*`),
      "LambdaInvoke grants the stage function and its qualified versions (<arn>:*); it is this stack's own " +
        'stage function and nothing else.',
    );
  }
}

const PROFILE_REASON =
  'A cross-region inference profile sends each request to its foundation model in one of the ' +
  "profile's regions, and Bedrock authorizes the model in that region; the profile ARN itself is " +
  'scoped to this account and region, and the model is this one model id.';

const acknowledgeCallCache = (stack: PipelineStack, role: IConstruct) =>
  acknowledge(
    role,
    wildcardResource(stack, stack.bucket.arnForObjects(`${CALL_CACHE_PREFIX}*`)),
    'A model stage reads and writes answered model calls under cache/calls/<hash>, named by the sha256 ' +
      'of each request, known only at run time; the grant is object-level Get/Put, no delete.',
  );

/** The findings BatchInference keeps on purpose: jobs, runs and task tokens named only at run time. */
function applyBatchAcknowledgements(stack: PipelineStack): void {
  const batch = stack.batch;
  if (!batch) return;
  const tokens = wildcardResource(stack, stack.bucket.arnForObjects(BATCH_TOKEN_KEYS));
  for (const fn of Object.values(batch.functions))
    acknowledge(
      fn.function,
      'AwsSolutions-L1',
      'nodejs22.x is pinned on purpose, as for the pipeline stages: the bundles target node22.',
    );

  const submit = batch.functions.batch;
  acknowledge(
    submit.role,
    'AwsSolutions-IAM5[Resource::*]',
    'Lambda active tracing (xray:PutTraceSegments, xray:PutTelemetryRecords) and ' +
      'bedrock:ListModelInvocationJobs support no resource-level permissions; the listing finds a job by ' +
      'name after a lost submit response, and reads job summaries only.',
  );
  acknowledge(
    submit.role,
    wildcardResource(stack, stack.bucket.arnForObjects(runPrefix('*'))),
    "The batch step reads a stage's shards and writes its job inputs, plans and stats under runs/<runId>/, " +
      'and run ids are known only at run time; object-level Get/Put/PutTagging/AbortMultipartUpload, no delete.',
  );
  if (submit.usesCallCache)
    acknowledge(
      submit.role,
      wildcardResource(stack, stack.bucket.arnForObjects(`${CALL_CACHE_PREFIX}*`)),
      'The batch step looks up the calls the cache already answers and puts the answers of a job under ' +
        'cache/calls/<hash>, named by the sha256 of each request at run time; object-level Get/Put, no delete.',
    );
  acknowledge(
    submit.role,
    tokens,
    'The batch step keeps the task token of each submitted job under batch-jobs/<jobName>.json, named ' +
      'when the job is planned; object-level Put only.',
  );
  acknowledge(
    submit.role,
    wildcardResource(stack, BATCH_JOB_ARNS),
    'Batch inference jobs are named per run and stage when a run plans them, and their ARNs carry an id ' +
      "Bedrock assigns on creation: the grant is this account and region's jobs, for create, get and stop.",
  );
  for (const arn of batch.modelArns.filter((a) => a.includes('*'))) {
    acknowledge(submit.role, wildcardResource(stack, arn), PROFILE_REASON);
    acknowledge(batch.serviceRole, wildcardResource(stack, arn), PROFILE_REASON);
  }

  const callback = batch.functions['batch-callback'];
  acknowledge(
    callback.role,
    'AwsSolutions-IAM5[Resource::*]',
    'Lambda active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no resource-level ' +
      'permissions.',
  );
  acknowledge(
    callback.role,
    tokens,
    'The callback reads the task token of the job an event names, known only when the event arrives; read-only.',
  );

  acknowledge(
    batch.serviceRole,
    wildcardResource(stack, stack.bucket.arnForObjects(BATCH_INPUT_KEYS)),
    "Bedrock reads a job's input, runs/<runId>/batch/<stage>/<jobName>/input.jsonl, named at run time; " +
      'read-only, and no other object of the run.',
  );
  acknowledge(
    batch.serviceRole,
    wildcardResource(stack, stack.bucket.arnForObjects(BATCH_OUTPUT_KEYS)),
    "Bedrock writes a job's results under batch-output/<runId>/<stage>/<jobName>/, named at run " +
      'time; object-level Put only.',
  );
  acknowledge(
    submit.role,
    wildcardResource(stack, stack.bucket.arnForObjects(BATCH_OUTPUT_KEYS)),
    "The batch step joins a job's results, which Bedrock writes under batch-output/<runId>/<stage>/<jobName>/ " +
      'at run time; read-only.',
  );

  acknowledge(
    stack.pipeline.stateMachine.role,
    wildcardResource(stack, `${submit.function.functionArn}:*`),
    "LambdaInvoke grants the batch step's function and its qualified versions (<arn>:*); this stack's own " +
      'function and nothing else.',
  );
}

/** The Bedrock resource ARN pattern of one kind in this account and region, as the stack writes it. */
const bedrockArn = (resource: string) =>
  `arn:${Aws.PARTITION}:bedrock:${Aws.REGION}:${Aws.ACCOUNT_ID}:${resource}/*`;

/** The findings ReverseTuning keeps on purpose: names of jobs, models and uploads known only at run time. */
function applyTuningAcknowledgements(stack: PipelineStack): void {
  const tuning = stack.tuning;
  const incoming = wildcardResource(stack, stack.bucket.arnForObjects(`${TUNING_INCOMING_PREFIX}*`));
  const manifests = wildcardResource(stack, stack.bucket.arnForObjects(tuningManifestKey('*')));
  const runtimeNamed = (what: string) =>
    `${what} are named per tuning (after the training data, base model and hyperparameters) when a run starts, ` +
    'so the grant is every such resource of this account and region, for these actions only.';
  for (const fn of Object.values(tuning.functions)) {
    acknowledge(
      fn.role,
      'AwsSolutions-IAM5[Resource::*]',
      'Lambda active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no resource-level ' +
        'permissions.',
    );
    acknowledge(
      fn.function,
      'AwsSolutions-L1',
      'nodejs22.x is pinned on purpose, as for the pipeline stages: the bundles target node22.',
    );
  }
  const prepare = tuning.functions['prepare-tuning'].role;
  acknowledge(
    prepare,
    wildcardResource(stack, bedrockArn('model-customization-job')),
    `${runtimeNamed('Customization jobs')} PrepareTuning reads whether one of this tuning ran before.`,
  );
  acknowledge(
    prepare,
    incoming,
    'PrepareTuning reads the uploaded training data, known only when it arrives; read-only.',
  );
  acknowledge(
    prepare,
    manifests,
    'PrepareTuning reads the manifest of an earlier tuning of the same data; read-only.',
  );
  acknowledge(
    tuning.functions['record-model'].role,
    manifests,
    "RecordModel writes the finished tuning's manifest, named after its job; object-level Put only.",
  );
  const serve = tuning.functions['serve-model'].role;
  acknowledge(
    serve,
    wildcardResource(stack, stack.bucket.arnForObjects(tuningServingKey('*'))),
    'ServeModel records and reads what it created for a job, named after the job; object-level Get/Put only.',
  );
  acknowledge(
    serve,
    wildcardResource(stack, bedrockArn('model-customization-job')),
    runtimeNamed('Customization jobs'),
  );
  acknowledge(serve, wildcardResource(stack, bedrockArn('custom-model')), runtimeNamed('Custom models'));
  acknowledge(
    serve,
    wildcardResource(stack, bedrockArn('custom-model-deployment')),
    runtimeNamed('Deployments'),
  );
  acknowledge(
    serve,
    wildcardResource(stack, bedrockArn('provisioned-model')),
    runtimeNamed('Provisioned models'),
  );

  acknowledge(
    tuning.bedrockRole,
    incoming,
    'Bedrock reads the uploaded training data of the job; read-only.',
  );
  acknowledge(
    tuning.bedrockRole,
    wildcardResource(stack, stack.bucket.arnForObjects(`${TUNING_OUTPUT_PREFIX}*`)),
    "Bedrock writes the job's output (metrics) under tuning/output/<job>/, named when the job starts.",
  );

  const machine = tuning.stateMachine;
  acknowledge(
    machine.role,
    'AwsSolutions-IAM5[Resource::*]',
    'Execution logging and tracing: the CloudWatch Logs delivery actions and the X-Ray writes support no ' +
      'resource-level permissions.',
  );
  for (const fn of Object.values(tuning.functions))
    acknowledge(
      machine.role,
      wildcardResource(stack, `${fn.function.functionArn}:*`),
      "LambdaInvoke grants the step's function and its qualified versions (<arn>:*); this stack's own function.",
    );
  acknowledge(
    machine.role,
    wildcardResource(stack, bedrockArn('model-customization-job')),
    `${runtimeNamed('Customization jobs')} The .sync integration creates, polls and stops them.`,
  );
  acknowledge(
    machine.role,
    wildcardResource(stack, bedrockArn('custom-model')),
    runtimeNamed('Custom models'),
  );
}
