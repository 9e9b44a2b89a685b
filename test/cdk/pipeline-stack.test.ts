import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { CDK_APP_MODE_CONTEXT, FAIL_SYNTH_ON_VALIDATION_ERRORS_CONTEXT } from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import { afterAll, describe, expect, it } from 'vitest';
import { applyNagAcknowledgements } from '../../lib/infra/nag.js';
import { PipelineStack } from '../../lib/infra/pipeline-stack.js';
import { FUNCTION_STAGES, type FunctionStage, TUNING_STAGES } from '../../lib/infra/stage-function.js';
import { definitionOf, LOCAL_ENV, resolveIntrinsics } from '../../lib/local/definition.js';
import { type PipelineConfigInput, parseConfig } from '../../lib/pipeline/config.js';
import { MODEL_STAGES } from '../../lib/pipeline/schemas.js';
import { testApps } from '../support/cdk-app.js';
import { nagFindings } from '../support/nag.js';

const HAIKU = 'anthropic.claude-3-haiku-20240307-v1:0';
const PROFILE = 'us.anthropic.claude-3-5-haiku-20241022-v1:0';
const BEDROCK_ONLY = {
  models: {
    induce: `bedrock:${HAIKU}`,
    filter: `bedrock:${HAIKU}`,
    respond: `bedrock:${HAIKU}`,
    evaluate: `bedrock:${HAIKU}`,
  },
} satisfies PipelineConfigInput;
/** A plain model id, an inference profile and an OpenAI-compatible server, one stage each. */
const MIXED = {
  models: {
    induce: `bedrock:${HAIKU}`,
    filter: `bedrock:${PROFILE}`,
    respond: 'openai:http://localhost:8000/v1#qwen2.5-7b-instruct',
    evaluate: `bedrock:${HAIKU}`,
  },
  concurrency: 7,
} satisfies PipelineConfigInput;
/** Induction by the model ReverseTuning records, judges on a custom model and SageMaker; provisioned serving. */
const TUNED = {
  models: {
    induce: 'ssm:/SaferInstruct/induce-model',
    filter: 'bedrock-custom:arn:aws:bedrock:us-west-2:123456789012:provisioned-model/abc123#llama',
    respond: 'sagemaker:My-Endpoint#messages',
    evaluate: `bedrock:${HAIKU}`,
  },
  tuning: { baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k', serving: 'provisioned' },
} satisfies PipelineConfigInput;
const JUDGE_TASKS = ['Filter', 'Respond', 'Evaluate'] as const;

// biome-ignore lint/suspicious/noExplicitAny: a synthesized template is untyped JSON, read by path in assertions.
type Json = any;
type Resources = Record<string, { Type: string; Properties: Record<string, Json> }>;
type Statement = { Action: string | string[]; Resource: unknown; Effect: string };

interface SynthOptions {
  readonly allowLocalModels?: boolean;
  /** Bundle the entry points with esbuild; off by default to keep the suite fast. */
  readonly bundle?: boolean;
  readonly context?: Record<string, unknown>;
}

const apps = testApps();
afterAll(apps.cleanup);
const { newApp } = apps;

function synthesize(config: PipelineConfigInput, options: SynthOptions = {}) {
  const app = newApp(options);
  const stack = new PipelineStack(app, 'SaferInstruct', {
    config: parseConfig(config),
    allowLocalModels: options.allowLocalModels,
  });
  const template = Template.fromStack(stack);
  return { app, stack, template, resources: template.toJSON().Resources as Resources };
}

let mixedStack: ReturnType<typeof synthesize> | undefined;
/** The stack of the MIXED config, synthesized once for the tests that only read it. */
const mixed = () => {
  mixedStack ??= synthesize(MIXED);
  return mixedStack;
};

const resolve = (value: unknown, resources: Resources) => resolveIntrinsics(value, { Resources: resources });

function functionOf(resources: Resources, stage: FunctionStage) {
  const found = Object.entries(resources).find(
    ([, r]) => r.Type === 'AWS::Lambda::Function' && r.Properties.Environment?.Variables?.STAGE === stage,
  );
  if (!found) throw new Error(`no function with STAGE=${stage}`);
  return { logicalId: found[0], properties: found[1].Properties };
}

/** Every statement of every policy attached to the role of the stage's function. */
function statementsOf(resources: Resources, stage: FunctionStage): Statement[] {
  const roleId = functionOf(resources, stage).properties.Role['Fn::GetAtt'][0];
  return Object.values(resources)
    .filter(
      (r) =>
        r.Type === 'AWS::IAM::Policy' &&
        r.Properties.Roles.some((ref: { Ref: string }) => ref.Ref === roleId),
    )
    .flatMap((r) => r.Properties.PolicyDocument.Statement as Statement[]);
}

/** The resolved resources the stage's role may apply `action` to. */
function resourcesAllowed(resources: Resources, stage: FunctionStage, action: string): string[] {
  return statementsOf(resources, stage)
    .filter((s) => s.Effect === 'Allow' && [s.Action].flat().includes(action))
    .flatMap((s) => [s.Resource].flat())
    .map((r) => String(resolve(r, resources)));
}

const foundationModel = (id: string, region: string = LOCAL_ENV.region) =>
  `arn:${LOCAL_ENV.partition}:bedrock:${region}::foundation-model/${id}`;
const inferenceProfile = (id: string) =>
  `arn:${LOCAL_ENV.partition}:bedrock:${LOCAL_ENV.region}:${LOCAL_ENV.account}:inference-profile/${id}`;

type State = Record<string, Json>;
function statesOf(resources: Resources) {
  const definition = definitionOf({ Resources: resources }) as {
    StartAt: string;
    States: Record<string, State>;
  };
  const induceShards = definition.States.InduceShards as State;
  const judgeShards = definition.States.JudgeShards as State;
  return {
    definition,
    induceShards,
    judgeShards,
    induceStates: induceShards.ItemProcessor.States as Record<string, State>,
    judgeStates: judgeShards.ItemProcessor.States as Record<string, State>,
  };
}

/** Asset hashes change with every edit of a handler; the snapshot is about everything else. */
const scrubHashes = (template: unknown) =>
  JSON.parse(JSON.stringify(template).replace(/[0-9a-f]{64}/g, '<asset-hash>')) as unknown;

describe('PipelineStack bucket', () => {
  it('keeps the bucket private, SSL-only, encrypted, retained and publishing events to EventBridge', () => {
    // Prepare
    const { template } = mixed();

    // Act
    const buckets = template.findResources('AWS::S3::Bucket');

    // Assess
    expect(Object.keys(buckets)).toHaveLength(1);
    template.hasResource('AWS::S3::Bucket', { DeletionPolicy: 'Retain', UpdateReplacePolicy: 'Retain' });
    template.hasResourceProperties('AWS::S3::Bucket', {
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
      },
      NotificationConfiguration: { EventBridgeConfiguration: { EventBridgeEnabled: true } },
    });
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Action: 's3:*',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
    template.resourceCountIs('Custom::S3BucketNotifications', 0);
  });

  it('expires tagged intermediate objects after 14 days and aborts multipart uploads after 7', () => {
    // Prepare
    const { template } = mixed();

    // Act
    const rules = Object.values(template.findResources('AWS::S3::Bucket'))[0]?.Properties
      .LifecycleConfiguration.Rules;

    // Assess
    expect(rules).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          Status: 'Enabled',
          ExpirationInDays: 14,
          TagFilters: [{ Key: 'safer-instruct', Value: 'intermediate' }],
        }),
        expect.objectContaining({
          Status: 'Enabled',
          AbortIncompleteMultipartUpload: { DaysAfterInitiation: 7 },
        }),
      ]),
    );
    expect(rules.find((r: { ExpirationInDays?: number }) => r.ExpirationInDays)).not.toHaveProperty('Prefix');
  });
});

describe('PipelineStack functions', () => {
  it('runs seven stage functions on nodejs22.x arm64, traced, each with STAGE and BUCKET_NAME', () => {
    // Prepare
    const { template, stack } = mixed();

    // Act
    const functions = Object.values(template.findResources('AWS::Lambda::Function'))
      .map((f) => f.Properties)
      .filter((f) => (FUNCTION_STAGES as readonly string[]).includes(f.Environment.Variables.STAGE));

    // Assess
    expect(functions.map((f) => f.Environment.Variables.STAGE).sort()).toEqual([...FUNCTION_STAGES].sort());
    const bucketRef = { Ref: stack.getLogicalId(stack.bucket.node.defaultChild as never) };
    for (const f of functions) {
      expect(f).toMatchObject({
        Runtime: 'nodejs22.x',
        Architectures: ['arm64'],
        Handler: 'index.handler',
        MemorySize: { dedup: 3008, merge: 2048 }[f.Environment.Variables.STAGE as string] ?? 1024,
        Timeout: 900,
        TracingConfig: { Mode: 'Active' },
        LoggingConfig: { LogGroup: { Ref: expect.any(String) } },
        Environment: { Variables: { BUCKET_NAME: bucketRef, NODE_OPTIONS: '--enable-source-maps' } },
      });
      expect(f.Environment.Variables).not.toHaveProperty('PIPELINE_CONFIG');
    }
  });

  it('passes the configuration to Split as a constant of the definition', () => {
    // Prepare
    const { resources } = mixed();

    // Act
    const { definition } = statesOf(resources);

    // Assess
    const split = definition.States.Split as State;
    expect(parseConfig(split.Parameters.Payload.config)).toEqual(parseConfig(MIXED));
    expect(split.Parameters.Payload).toMatchObject({ 'event.$': '$', 'executionId.$': '$$.Execution.Id' });
  });

  it('gives every function its own log group kept for a month', () => {
    // Prepare
    const { resources } = mixed();

    // Act
    const logGroupsOfFunctions = FUNCTION_STAGES.map(
      (stage) => functionOf(resources, stage).properties.LoggingConfig.LogGroup.Ref as string,
    );

    // Assess
    expect(new Set(logGroupsOfFunctions).size).toBe(FUNCTION_STAGES.length);
    for (const id of logGroupsOfFunctions) {
      expect(resources[id]).toMatchObject({
        Type: 'AWS::Logs::LogGroup',
        Properties: { RetentionInDays: 30 },
      });
    }
  });

  it('grants bedrock:InvokeModel on exactly the models configured for each stage', () => {
    // Prepare
    const { resources } = mixed();

    // Act
    const allowed = (stage: FunctionStage) =>
      resourcesAllowed(resources, stage, 'bedrock:InvokeModel').sort();

    // Assess
    expect(allowed('induce')).toEqual([foundationModel(HAIKU)]);
    expect(allowed('filter')).toEqual(
      [inferenceProfile(PROFILE), foundationModel(PROFILE.slice('us.'.length), '*')].sort(),
    );
    expect(allowed('respond')).toEqual([]);
    expect(allowed('evaluate')).toEqual([foundationModel(HAIKU)]);
    expect(allowed('split')).toEqual([]);
    expect(allowed('merge')).toEqual([]);
  });

  it('lets every stage read and write runs/, only split read incoming/, only model stages use cache/calls/', () => {
    // Prepare
    const { resources } = mixed();
    const bucketArn = `${Object.keys(resources).find((id) => resources[id]?.Type === 'AWS::S3::Bucket')}.Arn`;

    // Act
    const access = (stage: FunctionStage) => ({
      list: resourcesAllowed(resources, stage, 's3:ListBucket'),
      get: resourcesAllowed(resources, stage, 's3:GetObject').sort(),
      put: resourcesAllowed(resources, stage, 's3:PutObject').sort(),
      tag: resourcesAllowed(resources, stage, 's3:PutObjectTagging'),
      delete: resourcesAllowed(resources, stage, 's3:DeleteObject'),
    });

    // Assess
    expect(access('split')).toEqual({
      list: [bucketArn],
      get: [`${bucketArn}/incoming/*`, `${bucketArn}/runs/*`],
      put: [`${bucketArn}/runs/*`],
      tag: [`${bucketArn}/runs/*`],
      delete: [],
    });
    expect(access('merge')).toEqual({
      list: [bucketArn],
      get: [`${bucketArn}/runs/*`],
      put: [`${bucketArn}/runs/*`],
      tag: [`${bucketArn}/runs/*`],
      delete: [],
    });
    for (const stage of MODEL_STAGES) {
      expect(access(stage)).toEqual({
        list: [bucketArn],
        get: [`${bucketArn}/cache/calls/*`, `${bucketArn}/runs/*`],
        put: [`${bucketArn}/cache/calls/*`, `${bucketArn}/runs/*`],
        tag: [`${bucketArn}/runs/*`],
        delete: [],
      });
    }
  });

  it('allows Resource "*" only for X-Ray and log delivery, the actions without resource-level permissions', () => {
    // Prepare
    const { resources } = mixed();

    // Act
    const wildcardActions = Object.values(resources)
      .filter((r) => r.Type === 'AWS::IAM::Policy')
      .flatMap((r) => r.Properties.PolicyDocument.Statement as Statement[])
      .filter((s) => [s.Resource].flat().includes('*'))
      .flatMap((s) => [s.Action].flat());

    // Assess
    expect(wildcardActions.length).toBeGreaterThan(0);
    for (const action of wildcardActions) {
      expect(action).toMatch(
        /^(xray:|logs:(Create|Get|Update|Delete|List)LogDeliver|logs:(Put|Describe)ResourcePolic|logs:DescribeLogGroups$)/,
      );
    }
  });
});

describe('PipelineStack trigger', () => {
  it('starts the state machine with the whole S3 Object Created event for keys under incoming/', () => {
    // Prepare
    const { template, stack } = mixed();

    // Act
    const rules = Object.values(template.findResources('AWS::Events::Rule'))
      .map((r) => r.Properties)
      .filter((r) => r.EventPattern.detail.object.key[0].prefix === 'incoming/');

    // Assess
    expect(rules).toHaveLength(1);
    expect(rules[0]).toMatchObject({
      EventPattern: {
        source: ['aws.s3'],
        'detail-type': ['Object Created'],
        detail: {
          bucket: { name: [{ Ref: stack.getLogicalId(stack.bucket.node.defaultChild as never) }] },
          object: { key: [{ prefix: 'incoming/' }] },
        },
      },
      Targets: [
        {
          Arn: { Ref: stack.getLogicalId(stack.pipeline.stateMachine.node.defaultChild as never) },
          RoleArn: { 'Fn::GetAtt': [expect.any(String), 'Arn'] },
        },
      ],
    });
    expect(rules[0]?.Targets[0]).not.toHaveProperty('Input');
    expect(rules[0]?.Targets[0]).not.toHaveProperty('InputPath');
  });

  it('outputs the bucket name and the state machine ARN', () => {
    // Prepare
    const { template } = mixed();

    // Act
    const outputs = template.toJSON().Outputs as Record<string, unknown>;

    // Assess
    expect(Object.keys(outputs)).toEqual(expect.arrayContaining(['BucketName', 'StateMachineArn']));
  });
});

describe('PipelineStack state machine', () => {
  it('runs Split, skips duplicates, dedups texts, maps Induce, dedups instructions, maps the judges, then Merge, then announces the run', () => {
    // Prepare
    const { resources } = mixed();

    // Act
    const { definition, induceStates, judgeStates } = statesOf(resources);

    // Assess
    expect(definition.StartAt).toBe('Split');
    expect(Object.keys(definition.States).sort()).toEqual(
      [
        'AlreadyStarted',
        'DedupInstructions',
        'DedupTexts',
        'DuplicateEvent?',
        'InduceShards',
        'JudgeShards',
        'Merge',
        'RunCompleted',
        'Split',
      ].sort(),
    );
    expect(definition.States.Split).toMatchObject({
      Type: 'Task',
      Next: 'DuplicateEvent?',
      OutputPath: '$.Payload',
      TimeoutSeconds: 900,
      Parameters: { Payload: { 'event.$': '$', 'executionId.$': '$$.Execution.Id' } },
    });
    expect(definition.States['DuplicateEvent?']).toEqual({
      Type: 'Choice',
      Choices: [{ Variable: '$.duplicate', BooleanEquals: true, Next: 'AlreadyStarted' }],
      Default: 'DedupTexts',
    });
    expect(definition.States.AlreadyStarted).toEqual({ Type: 'Succeed' });
    expect(definition.States.DedupTexts).toMatchObject({ Type: 'Task', Next: 'InduceShards' });
    expect(definition.States.InduceShards).toMatchObject({ Type: 'Map', Next: 'DedupInstructions' });
    expect(definition.States.DedupInstructions).toMatchObject({ Type: 'Task', Next: 'JudgeShards' });
    expect(definition.States.JudgeShards).toMatchObject({ Type: 'Map', Next: 'Merge' });
    expect(Object.keys(induceStates).sort()).toEqual([
      'Induce',
      'InduceBudgetExceeded',
      'InduceModelUnusable',
      'InduceShardFailed',
    ]);
    expect(Object.keys(judgeStates).sort()).toEqual(
      [...JUDGE_TASKS, 'JudgeBudgetExceeded', 'JudgeModelUnusable', 'JudgeShardFailed'].sort(),
    );
  });

  it('runs each dedup pass over the whole run, keeping the shard list for the next Map', () => {
    // Prepare
    const { resources } = mixed();

    // Act
    const { definition } = statesOf(resources);

    // Assess
    for (const [name, field, resultPath] of [
      ['DedupTexts', 'text', '$.texts'],
      ['DedupInstructions', 'instruction', '$.instructions'],
    ])
      expect(definition.States[name as string]).toMatchObject({
        TimeoutSeconds: 900,
        Parameters: { Payload: { 'runId.$': '$.runId', field } },
        ResultSelector: { 'shards.$': '$.Payload.shards', 'records.$': '$.Payload.records' },
        ResultPath: resultPath,
      });
  });

  it('maps inline over the shards each dedup pass hands on, with the configured MaxConcurrency', () => {
    // Prepare
    const { resources } = mixed();

    // Act
    const { induceShards, judgeShards } = statesOf(resources);

    // Assess
    for (const [map, itemsPath, resultPath, startAt] of [
      [induceShards, '$.texts.shards', '$.induceResults', 'Induce'],
      [judgeShards, '$.instructions.shards', '$.shardResults', 'Filter'],
    ] as const) {
      expect(map).toMatchObject({
        ItemsPath: itemsPath,
        MaxConcurrency: MIXED.concurrency,
        ResultPath: resultPath,
        ItemSelector: { 'runId.$': '$.runId', 'shard.$': '$$.Map.Item.Value' },
        ItemProcessor: { ProcessorConfig: { Mode: 'INLINE' }, StartAt: startAt },
      });
      expect(map).not.toHaveProperty('ItemReader');
    }
  });

  it('retries Split, the dedup passes and Merge after a store failure or a timeout, as they redo their work whole', () => {
    // Prepare
    const { resources } = mixed();

    // Act
    const states = statesOf(resources).definition.States;

    // Assess
    for (const name of ['Split', 'DedupTexts', 'DedupInstructions', 'Merge']) {
      // A dedup pass keeps the shards it finished, so a timed-out task (the task's own clock too) goes on.
      const timeouts = name.startsWith('Dedup')
        ? ['Sandbox.Timedout', 'States.Timeout']
        : ['Sandbox.Timedout'];
      expect((states[name] as State).Retry).toEqual(
        expect.arrayContaining([
          {
            ErrorEquals: ['StoreTransientError', ...timeouts],
            IntervalSeconds: 2,
            BackoffRate: 2,
            MaxAttempts: 4,
            JitterStrategy: 'FULL',
          },
        ]),
      );
    }
  });

  it('retries each model task on throttling with full jitter, fails the run on an unusable model or a spent budget, and catches any other error into ShardFailed', () => {
    // Prepare
    const { resources } = mixed();

    // Act
    const { induceStates, judgeStates } = statesOf(resources);

    // Assess
    for (const [prefix, tasks, itemStates] of [
      ['Induce', ['Induce'], induceStates],
      ['Judge', JUDGE_TASKS, judgeStates],
    ] as const)
      for (const [index, name] of tasks.entries()) {
        const task = itemStates[name] as State;
        expect(task).toMatchObject({ Type: 'Task', TimeoutSeconds: 900, OutputPath: '$.Payload' });
        expect(task.Parameters['Payload.$']).toBe('$');
        expect(task.Next ?? 'End').toBe(tasks[index + 1] ?? 'End');
        expect(task.Retry).toEqual(
          expect.arrayContaining([
            {
              ErrorEquals: ['ModelThrottledError'],
              IntervalSeconds: 10,
              BackoffRate: 2,
              MaxAttempts: 8,
              MaxDelaySeconds: 300,
              JitterStrategy: 'FULL',
            },
            {
              ErrorEquals: [
                'ModelTransientError',
                'StoreTransientError',
                'Lambda.TooManyRequestsException',
                'States.Timeout',
                'Sandbox.Timedout',
              ],
              IntervalSeconds: 2,
              BackoffRate: 2,
              MaxAttempts: 4,
              JitterStrategy: 'FULL',
            },
            expect.objectContaining({ ErrorEquals: expect.arrayContaining(['Lambda.ServiceException']) }),
          ]),
        );
        expect(task.Catch).toEqual([
          { ErrorEquals: ['ModelConfigError'], Next: `${prefix}ModelUnusable` },
          { ErrorEquals: ['BudgetExceededError'], Next: `${prefix}BudgetExceeded` },
          { ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: `${prefix}ShardFailed` },
        ]);
        expect(itemStates[`${prefix}ModelUnusable`]).toMatchObject({
          Type: 'Fail',
          Error: 'ModelConfigError',
        });
        expect(itemStates[`${prefix}ShardFailed`]).toEqual({
          Type: 'Pass',
          Parameters: { 'shard.$': '$.shard', failed: true, 'error.$': '$.error.Error' },
          End: true,
        });
      }
  });

  it('hands Merge the run id and the shard results of both Maps by JSON path', () => {
    // Prepare
    const { resources } = mixed();

    // Act
    const { definition } = statesOf(resources);

    // Assess
    expect(definition.States.Merge).toMatchObject({
      Type: 'Task',
      Next: 'RunCompleted',
      OutputPath: '$.Payload',
      TimeoutSeconds: 900,
      Parameters: {
        Payload: {
          'runId.$': '$.runId',
          'induceResults.$': '$.induceResults',
          'shardResults.$': '$.shardResults',
        },
      },
    });
  });

  it('invokes each stage function from its own task', () => {
    // Prepare
    const { resources } = mixed();
    const arnOf = (stage: FunctionStage) =>
      resolve({ 'Fn::GetAtt': [functionOf(resources, stage).logicalId, 'Arn'] }, resources);

    // Act
    const { definition, induceStates, judgeStates } = statesOf(resources);

    // Assess
    expect(definition.States.Split?.Parameters.FunctionName).toBe(arnOf('split'));
    expect(definition.States.DedupTexts?.Parameters.FunctionName).toBe(arnOf('dedup'));
    expect(definition.States.DedupInstructions?.Parameters.FunctionName).toBe(arnOf('dedup'));
    expect(induceStates.Induce?.Parameters.FunctionName).toBe(arnOf('induce'));
    expect(judgeStates.Filter?.Parameters.FunctionName).toBe(arnOf('filter'));
    expect(judgeStates.Respond?.Parameters.FunctionName).toBe(arnOf('respond'));
    expect(judgeStates.Evaluate?.Parameters.FunctionName).toBe(arnOf('evaluate'));
    expect(definition.States.Merge?.Parameters.FunctionName).toBe(arnOf('merge'));
  });

  it('is a traced Standard workflow logging every event without execution data', () => {
    // Prepare
    const { template } = mixed();

    // Act
    const machine = Object.values(template.findResources('AWS::StepFunctions::StateMachine'))[0]?.Properties;

    // Assess
    expect(machine).toMatchObject({
      StateMachineType: 'STANDARD',
      TracingConfiguration: { Enabled: true },
      LoggingConfiguration: {
        Level: 'ALL',
        IncludeExecutionData: false,
        Destinations: [
          { CloudWatchLogsLogGroup: { LogGroupArn: { 'Fn::GetAtt': [expect.any(String), 'Arn'] } } },
        ],
      },
    });
  });
});

describe('PipelineStack validation', () => {
  it('refuses llama models and an oversized configuration in one combined error', () => {
    // Prepare
    const config = {
      models: { ...BEDROCK_ONLY.models, induce: 'llama:/models/a.gguf', respond: 'llama:/models/b.gguf' },
      stages: {
        induce: { maxTokens: 128, temperature: 0.2, template: { system: 'x'.repeat(70_000), user: 'y' } },
      },
    } satisfies PipelineConfigInput;

    // Act
    const act = () => synthesize(config);

    // Assess
    expect(act).toThrowError(
      expect.objectContaining({
        name: 'ConfigError',
        message: expect.stringMatching(/models\.induce[\s\S]*models\.respond[\s\S]*bytes/),
      }),
    );
  });

  it('accepts llama models when the template is meant for the local engine', () => {
    // Prepare
    const config = { models: { ...BEDROCK_ONLY.models, induce: 'llama:/models/a.gguf' } };

    // Act
    const { resources } = synthesize(config, { allowLocalModels: true });

    // Assess
    expect(resourcesAllowed(resources, 'induce', 'bedrock:InvokeModel')).toEqual([]);
  });
});

describe('PipelineStack cdk-nag', () => {
  it.each([
    ['a Bedrock-only config', BEDROCK_ONLY],
    ['a mixed config with an inference profile', MIXED],
    ['a tuned-induction config with provisioned throughput', TUNED],
  ])('leaves no unacknowledged AwsSolutions error or warning for %s', (_, config) => {
    // Prepare
    const app = newApp({ context: { [FAIL_SYNTH_ON_VALIDATION_ERRORS_CONTEXT]: false } });
    const stack = new PipelineStack(app, 'SaferInstruct', { config: parseConfig(config) });
    applyNagAcknowledgements(stack);
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));

    // Act
    const findings = nagFindings(app);

    // Assess
    expect(findings).toEqual([]);
  });

  it('fails synth on a finding nobody acknowledged', () => {
    // Prepare
    const app = newApp({ context: { [CDK_APP_MODE_CONTEXT]: 'inmemory' } });
    new PipelineStack(app, 'SaferInstruct', { config: parseConfig(BEDROCK_ONLY) });
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));

    // Act
    const act = () => app.synth();

    // Assess
    expect(act).toThrowError(/AwsSolutions-S1/);
  });
});

describe('PipelineStack template', () => {
  it('matches the snapshot, asset hashes aside', () => {
    // Prepare
    const { template } = mixed();

    // Act
    const scrubbed = scrubHashes(template.toJSON());

    // Assess
    expect(scrubbed).toMatchSnapshot();
  });

  // Ten bundles by esbuild take most of a minute on two busy cores.
  it('bundles every stage entry point into an ESM module with a source map that loads without node_modules', async () => {
    // Prepare
    const app = newApp({ bundle: true });
    new PipelineStack(app, 'SaferInstruct', { config: parseConfig(BEDROCK_ONLY) });

    // Act
    const assembly = app.synth();

    // Assess
    const assets = readdirSync(assembly.directory).filter((name) => name.startsWith('asset.'));
    expect(assets).toHaveLength(FUNCTION_STAGES.length + TUNING_STAGES.length);
    for (const asset of assets) {
      const files = readdirSync(join(assembly.directory, asset));
      expect(files.sort()).toEqual(['index.mjs', 'index.mjs.map']);
      const code = readFileSync(join(assembly.directory, asset, 'index.mjs'), 'utf8');
      expect(code.startsWith("import { createRequire } from 'node:module';")).toBe(true);
      expect(code).toMatch(/export\s*\{[^}]*\bhandler\b/);
      // Outside the repo no node_modules resolve: a cold start that needs node-llama-cpp would fail here.
      const isolated = mkdtempSync(join(tmpdir(), 'safer-instruct-bundle-'));
      const withoutMap = code.replace(/\n\/\/# sourceMappingURL=.*\n?$/, '\n');
      writeFileSync(join(isolated, 'index.mjs'), withoutMap);
      const module = await import(pathToFileURL(join(isolated, 'index.mjs')).href);
      expect(typeof module.handler).toBe('function');
      rmSync(isolated, { recursive: true, force: true });
    }
  }, 180_000);
});
