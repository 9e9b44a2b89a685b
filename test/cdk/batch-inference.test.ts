import { Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { FAIL_SYNTH_ON_VALIDATION_ERRORS_CONTEXT } from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import { afterAll, describe, expect, it } from 'vitest';
import { applyNagAcknowledgements } from '../../lib/infra/nag.js';
import { PipelineStack } from '../../lib/infra/pipeline-stack.js';
import { definitionOf, LOCAL_ENV, localFunctionArn, resolveIntrinsics } from '../../lib/local/definition.js';
import { type PipelineConfigInput, parseConfig } from '../../lib/pipeline/config.js';
import { testApps } from '../support/cdk-app.js';
import { nagFindings } from '../support/nag.js';

// biome-ignore lint/suspicious/noExplicitAny: a synthesized template is untyped JSON, read by path in assertions.
type Json = any;
type Resources = Record<string, { Type: string; Properties: Record<string, Json> }>;
type Statement = { Action: string | string[]; Resource: unknown; Effect: string; Condition?: Json };

const NOVA = 'amazon.nova-micro-v1:0';
const PROFILE = 'us.amazon.nova-micro-v1:0';
/** Every stage on one Bedrock model, in batch mode. */
const BATCH = {
  mode: 'batch',
  models: {
    induce: `bedrock:${NOVA}`,
    filter: `bedrock:${NOVA}`,
    respond: `bedrock:${NOVA}`,
    evaluate: `bedrock:${NOVA}`,
  },
} satisfies PipelineConfigInput;
/** Mode auto with an inference profile and a model Bedrock cannot batch. */
const AUTO = {
  mode: 'auto',
  models: {
    induce: `bedrock:${NOVA}`,
    filter: `bedrock:${PROFILE}`,
    respond: 'openai:http://localhost:8000/v1#qwen2.5-7b-instruct',
    evaluate: `bedrock:${NOVA}`,
  },
} satisfies PipelineConfigInput;
const ON_DEMAND = { models: BATCH.models } satisfies PipelineConfigInput;
const STAGES = ['Induce', 'Filter', 'Respond', 'Evaluate'] as const;

const apps = testApps();
afterAll(apps.cleanup);
const { newApp } = apps;

function synthesize(config: PipelineConfigInput) {
  const stack = new PipelineStack(newApp(), 'SaferInstruct', { config: parseConfig(config) });
  const template = Template.fromStack(stack);
  const resources = template.toJSON().Resources as Resources;
  const id = (construct: { node: { defaultChild?: unknown } }) =>
    stack.getLogicalId(construct.node.defaultChild as never);
  const resolve = (value: unknown) => resolveIntrinsics(value, { Resources: resources });
  /** Every statement of the policies attached to a role, resolved to local ARNs. */
  const statements = (roleId: string): Statement[] =>
    Object.values(resources)
      .filter(
        (r) => r.Type === 'AWS::IAM::Policy' && r.Properties.Roles.some((ref: Json) => ref.Ref === roleId),
      )
      .flatMap((r) => r.Properties.PolicyDocument.Statement as Statement[])
      .map((s) => resolve(s) as Statement);
  return { stack, template, resources, id, resolve, statements };
}

/** Synthesizes a config once, on first use: a synth takes seconds, and most tests only read it. */
function once<T>(make: () => T): () => T {
  let made: { value: T } | undefined;
  return () => {
    made ??= { value: make() };
    return made.value;
  };
}
const batchStack = once(() => synthesize(BATCH));
const autoStack = once(() => synthesize(AUTO));
const onDemandStack = once(() => synthesize(ON_DEMAND));

/** The batch construct of a synthesized stack; fails the test when the stack has none. */
function batchOf(synth: ReturnType<typeof synthesize>) {
  const batch = synth.stack.batch;
  if (!batch) throw new Error('the stack has no BatchInference');
  return batch;
}

const arn = (resource: string) => `arn:aws:bedrock:${LOCAL_ENV.region}:${LOCAL_ENV.account}:${resource}`;
const JOBS = arn('model-invocation-job/*');
const foundationModel = (model: string, region: string = LOCAL_ENV.region) =>
  `arn:aws:bedrock:${region}::foundation-model/${model}`;
/** `action resource,resource` per action of each statement, sorted. */
const actionsOn = (statements: Statement[]) =>
  statements.flatMap((s) => [s.Action].flat().map((a) => `${a} ${[s.Resource].flat().join(',')}`)).sort();
const withAction = (statements: Statement[], action: string) =>
  statements.filter((s) => [s.Action].flat().includes(action));

/** Every state of a definition, inside Maps and Parallels too, by name. */
function allStates(states: Record<string, Json>): Record<string, Json> {
  const found: Record<string, Json> = {};
  for (const [name, state] of Object.entries(states)) {
    found[name] = state;
    const nested = [state.ItemProcessor, state.Iterator, ...(state.Branches ?? [])].filter(Boolean);
    for (const inner of nested) Object.assign(found, allStates(inner.States));
  }
  return found;
}

describe('BatchInference service role', () => {
  it('is assumed only by Bedrock, for batch inference jobs of this account and region', () => {
    // Prepare
    const synth = batchStack();
    const role = batchOf(synth).serviceRole;

    // Act
    const trust = synth.resolve(
      synth.resources[synth.id(role)]?.Properties.AssumeRolePolicyDocument.Statement,
    );

    // Assess
    expect(trust).toEqual([
      {
        Action: 'sts:AssumeRole',
        Effect: 'Allow',
        Principal: { Service: 'bedrock.amazonaws.com' },
        Condition: {
          StringEquals: { 'aws:SourceAccount': LOCAL_ENV.account },
          ArnLike: { 'aws:SourceArn': JOBS },
        },
      },
    ]);
    expect(synth.resources[synth.id(role)]?.Properties).not.toHaveProperty('ManagedPolicyArns');
  });

  it("lets Bedrock read a job's input, write its output under batch-output/ and list those prefixes, nothing else", () => {
    // Prepare
    const synth = batchStack();
    const bucket = synth.id(synth.stack.bucket);

    // Act
    const statements = synth.statements(synth.id(batchOf(synth).serviceRole));

    // Assess
    expect(actionsOn(statements)).toEqual([
      `s3:GetObject ${bucket}.Arn/runs/*/batch/*/*/input.jsonl`,
      `s3:ListBucket ${bucket}.Arn`,
      `s3:PutObject ${bucket}.Arn/batch-output/*`,
    ]);
    expect(statements.every((s) => s.Effect === 'Allow')).toBe(true);
    expect(withAction(statements, 's3:ListBucket')[0]?.Condition).toEqual({
      StringLike: { 's3:prefix': ['runs/*/batch/*', 'batch-output/*'] },
    });
  });
});

describe('BatchInference batch function', () => {
  it('creates jobs on the configured models only, and gets and stops any job of the account', () => {
    // Prepare
    const synth = batchStack();

    // Act
    const bedrock = actionsOn(synth.statements(synth.id(batchOf(synth).functions.batch.role))).filter((a) =>
      a.startsWith('bedrock:'),
    );

    // Assess
    expect(bedrock).toEqual([
      `bedrock:CreateModelInvocationJob ${JOBS},${foundationModel(NOVA)}`,
      `bedrock:GetModelInvocationJob ${JOBS}`,
      'bedrock:ListModelInvocationJobs *',
      `bedrock:StopModelInvocationJob ${JOBS}`,
    ]);
  });

  it("creates jobs on an inference profile and its model in the profile's regions, not on non-Bedrock models", () => {
    // Prepare
    const synth = autoStack();

    // Act
    const create = withAction(
      synth.statements(synth.id(batchOf(synth).functions.batch.role)),
      'bedrock:CreateModelInvocationJob',
    ).flatMap((s) => [s.Resource].flat());

    // Assess
    expect(create.sort()).toEqual(
      [
        JOBS,
        foundationModel(NOVA),
        arn(`inference-profile/${PROFILE}`),
        foundationModel(PROFILE.slice('us.'.length), '*'),
      ].sort(),
    );
  });

  it('lets the jobs of an inference profile invoke the profile and its model in the regions it routes to', () => {
    // Prepare
    const synth = autoStack();

    // Act
    const invoke = withAction(
      synth.statements(synth.id(batchOf(synth).serviceRole)),
      'bedrock:InvokeModel',
    ).flatMap((s) => [s.Resource].flat());

    // Assess
    expect(invoke.sort()).toEqual(
      [arn(`inference-profile/${PROFILE}`), foundationModel(PROFILE.slice('us.'.length), '*')].sort(),
    );
  });

  it('passes only the service role, and only to Bedrock, and names it in BATCH_ROLE_ARN', () => {
    // Prepare
    const synth = batchStack();
    const batch = batchOf(synth);
    const roleArn = `${synth.id(batch.serviceRole)}.Arn`;

    // Act
    const passRole = withAction(synth.statements(synth.id(batch.functions.batch.role)), 'iam:PassRole');
    const environment = synth.resolve(
      synth.resources[synth.id(batch.functions.batch.function)]?.Properties.Environment.Variables,
    );

    // Assess
    expect(passRole).toEqual([
      {
        Action: 'iam:PassRole',
        Effect: 'Allow',
        Resource: roleArn,
        Condition: { StringEquals: { 'iam:PassedToService': 'bedrock.amazonaws.com' } },
      },
    ]);
    expect(environment).toMatchObject({ STAGE: 'batch', BATCH_ROLE_ARN: roleArn });
  });

  it('puts task-token records under batch-jobs/, reads job outputs, reads and writes runs/ and the call cache, and invokes no model', () => {
    // Prepare
    const synth = batchStack();
    const bucket = `${synth.id(synth.stack.bucket)}.Arn`;

    // Act
    const actions = actionsOn(synth.statements(synth.id(batchOf(synth).functions.batch.role)));

    // Assess
    expect(actions.filter((a) => a.startsWith('s3:'))).toEqual([
      `s3:AbortMultipartUpload ${bucket}/runs/*`,
      `s3:GetObject ${bucket}/batch-output/*`,
      `s3:GetObject ${bucket}/cache/calls/*`,
      `s3:GetObject ${bucket}/runs/*`,
      `s3:ListBucket ${bucket}`,
      `s3:PutObject ${bucket}/batch-jobs/*`,
      `s3:PutObject ${bucket}/cache/calls/*`,
      `s3:PutObject ${bucket}/runs/*`,
      `s3:PutObjectTagging ${bucket}/runs/*`,
    ]);
    expect(actions.join('\n')).not.toMatch(/InvokeModel|sagemaker:|states:|Delete/);
  });

  it('allows Resource "*" only for X-Ray and ListModelInvocationJobs, which support no resource-level permissions', () => {
    // Prepare
    const synth = batchStack();

    // Act
    const wildcardActions = synth
      .statements(synth.id(batchOf(synth).functions.batch.role))
      .filter((s) => [s.Resource].flat().includes('*'))
      .flatMap((s) => [s.Action].flat());

    // Assess
    for (const action of wildcardActions)
      expect(action).toMatch(/^(xray:PutT(raceSegments|elemetryRecords)|bedrock:ListModelInvocationJobs)$/);
    expect(wildcardActions).toContain('bedrock:ListModelInvocationJobs');
  });
});

describe('BatchInference callback', () => {
  it("reads task-token records only, and answers the pipeline's waits with SendTaskSuccess", () => {
    // Prepare
    const synth = batchStack();
    const bucket = `${synth.id(synth.stack.bucket)}.Arn`;
    const machine = synth.id(synth.stack.pipeline.stateMachine);

    // Act
    const actions = actionsOn(synth.statements(synth.id(batchOf(synth).functions['batch-callback'].role)));

    // Assess
    expect(actions.filter((a) => !a.startsWith('xray:') && !a.startsWith('logs:'))).toEqual([
      `s3:GetObject ${bucket}/batch-jobs/*`,
      `s3:ListBucket ${bucket}`,
      `states:SendTaskSuccess ${machine}`,
    ]);
  });

  it("receives Bedrock's batch job state changes through an EventBridge rule that retries delivery", () => {
    // Prepare
    const synth = batchStack();
    const callback = synth.id(batchOf(synth).functions['batch-callback'].function);

    // Act
    const rules = Object.values(synth.template.findResources('AWS::Events::Rule'))
      .map((r) => r.Properties)
      .filter((r) => r.EventPattern.source[0] === 'aws.bedrock');

    // Assess
    expect(rules).toHaveLength(1);
    expect(rules[0]).toMatchObject({
      State: 'ENABLED',
      EventPattern: { source: ['aws.bedrock'], 'detail-type': ['Batch Inference Job State Change'] },
      Targets: [
        {
          Arn: { 'Fn::GetAtt': [callback, 'Arn'] },
          RetryPolicy: { MaximumRetryAttempts: 8, MaximumEventAgeInSeconds: 24 * 3600 },
        },
      ],
    });
    synth.template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      FunctionName: { 'Fn::GetAtt': [callback, 'Arn'] },
      Principal: 'events.amazonaws.com',
    });
  });

  it('is a short function that touches no run', () => {
    // Prepare
    const synth = batchStack();

    // Act
    const fn = synth.resources[synth.id(batchOf(synth).functions['batch-callback'].function)]?.Properties;

    // Assess
    expect(fn).toMatchObject({ Timeout: 60, Environment: { Variables: { STAGE: 'batch-callback' } } });
    expect(fn?.Environment.Variables).not.toHaveProperty('BATCH_ROLE_ARN');
  });
});

describe('PipelineStack in batch mode', () => {
  it('plans each model stage, then waits for each of its jobs on a task token handed to the batch function', () => {
    // Prepare
    const synth = batchStack();
    const batchArn = localFunctionArn(synth.id(batchOf(synth).functions.batch.function));

    // Act
    const states = allStates(
      (definitionOf({ Resources: synth.resources }) as { States: Record<string, Json> }).States,
    );

    // Assess
    for (const stage of STAGES) {
      expect(states[`Plan${stage}`]?.Parameters.FunctionName).toBe(batchArn);
      expect(states[`${stage}Jobs`]?.Type).toBe('Map');
      expect(states[`Join${stage}Job`]).toBeDefined();
      expect(states[`Submit${stage}Job`]).toMatchObject({
        Type: 'Task',
        Resource: 'arn:aws:states:::lambda:invoke.waitForTaskToken',
        Parameters: {
          FunctionName: batchArn,
          Payload: { 'taskToken.$': '$$.Task.Token', action: 'submit' },
        },
      });
    }
  });

  it('retries a throttled join and a timed-out submit, and joins whatever a submit ends with', () => {
    // Prepare
    const synth = batchStack();

    // Act
    const states = allStates(
      (definitionOf({ Resources: synth.resources }) as { States: Record<string, Json> }).States,
    );
    const retried = (state: string) =>
      ((states[state]?.Retry ?? []) as { ErrorEquals: string[] }[]).flatMap((r) => r.ErrorEquals);

    // Assess
    for (const stage of STAGES) {
      expect(retried(`Join${stage}Job`)).toEqual(
        expect.arrayContaining(['ModelThrottledError', 'ModelTransientError', 'StoreTransientError']),
      );
      expect(retried(`Submit${stage}Job`)).toEqual(
        expect.arrayContaining(['ModelThrottledError', 'ModelTransientError', 'Sandbox.Timedout']),
      );
      expect(retried(`Submit${stage}Job`)).not.toContain('States.Timeout');
      expect(states[`Submit${stage}Job`]?.Catch).toEqual([
        { ErrorEquals: ['States.ALL'], ResultPath: '$.submitError', Next: `Join${stage}Job` },
      ]);
      expect(states[`Plan${stage}`]?.Catch).toEqual([
        { ErrorEquals: ['States.ALL'], ResultPath: '$.batchError', Next: `${stage}BatchDone` },
      ]);
    }
  });

  it('expires task-token records after 30 days and job outputs after 14, beside the intermediate-object rule', () => {
    // Prepare
    const { template } = batchStack();

    // Act
    const rules = Object.values(template.findResources('AWS::S3::Bucket'))[0]?.Properties
      .LifecycleConfiguration.Rules;

    // Assess
    expect(rules).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ Status: 'Enabled', Prefix: 'batch-jobs/', ExpirationInDays: 30 }),
        expect.objectContaining({ Status: 'Enabled', Prefix: 'batch-output/', ExpirationInDays: 14 }),
        expect.objectContaining({ ExpirationInDays: 14, TagFilters: [expect.anything()] }),
      ]),
    );
  });

  it('outputs the batch service role ARN', () => {
    // Prepare
    const synth = batchStack();

    // Act
    const outputs = synth.template.toJSON().Outputs as Record<string, { Value: unknown }>;

    // Assess
    expect(outputs.BatchRoleArn?.Value).toEqual({
      'Fn::GetAtt': [synth.id(batchOf(synth).serviceRole), 'Arn'],
    });
  });

  it('creates none of the batch resources in mode on-demand', () => {
    // Prepare
    const synth = onDemandStack();

    // Act
    const stages = Object.values(synth.resources)
      .filter((r) => r.Type === 'AWS::Lambda::Function')
      .map((r) => r.Properties.Environment?.Variables?.STAGE);
    const text = JSON.stringify(synth.template.toJSON());

    // Assess
    expect(synth.stack.batch).toBeUndefined();
    expect(stages).not.toContain('batch');
    expect(stages).not.toContain('batch-callback');
    expect(text).not.toMatch(/aws\.bedrock|model-invocation-job|waitForTaskToken|batch-jobs|BATCH_ROLE_ARN/);
    expect(synth.template.toJSON().Outputs).not.toHaveProperty('BatchRoleArn');
  });
});

describe('BatchInference cdk-nag', () => {
  it.each([
    ['mode batch with one Bedrock model', BATCH],
    ['mode auto with an inference profile and an OpenAI-compatible model', AUTO],
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
});
