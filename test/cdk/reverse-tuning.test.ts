import { rmSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { afterAll, describe, expect, it } from 'vitest';
import { PipelineStack } from '../../lib/infra/pipeline-stack.js';
import { definitionOf, LOCAL_ENV, resolveIntrinsics } from '../../lib/local/definition.js';
import { type PipelineConfigInput, parseConfig } from '../../lib/pipeline/config.js';
import { tempDir } from '../support/temp.js';

// biome-ignore lint/suspicious/noExplicitAny: a synthesized template is untyped JSON, read by path in assertions.
type Json = any;
type Resources = Record<string, { Type: string; Properties: Record<string, Json> }>;
type Statement = { Action: string | string[]; Resource: unknown; Effect: string; Condition?: Json };

const outdirs: string[] = [];
afterAll(() => {
  for (const dir of outdirs) rmSync(dir, { recursive: true, force: true });
});

const HAIKU = 'bedrock:anthropic.claude-3-haiku-20240307-v1:0';
const models = { induce: HAIKU, filter: HAIKU, respond: HAIKU, evaluate: HAIKU };

function synthesize(config: PipelineConfigInput) {
  const outdir = tempDir('safer-instruct-cdk-');
  outdirs.push(outdir);
  const app = new App({
    outdir,
    builtinCloudFormationValidation: false,
    context: { 'aws:cdk:bundling-stacks': [] },
  });
  const stack = new PipelineStack(app, 'SaferInstruct', { config: parseConfig({ models, ...config }) });
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
  const definition = definitionOf({ Resources: resources }, id(stack.tuning.stateMachine)) as {
    StartAt: string;
    States: Record<string, Json>;
  };
  return { stack, template, resources, id, statements, definition };
}

const arn = (resource: string) => `arn:aws:bedrock:${LOCAL_ENV.region}:${LOCAL_ENV.account}:${resource}`;
const actionsOn = (statements: Statement[]) =>
  statements.flatMap((s) => [s.Action].flat().map((a) => `${a} ${[s.Resource].flat().join(',')}`)).sort();

describe('ReverseTuning state machine', () => {
  it('runs PrepareTuning, the .sync customization job, ServeModel with a wait loop, then RecordModel', () => {
    // Prepare
    const { definition } = synthesize({});

    // Act
    const { States: states, StartAt: start } = definition;

    // Assess
    expect(start).toBe('PrepareTuning');
    expect(states['AlreadyTuned?']).toMatchObject({
      Type: 'Choice',
      Choices: [
        { Variable: '$.prepared.value.done', BooleanEquals: true, Next: 'UseRecorded' },
        { Variable: '$.prepared.value.trained', BooleanEquals: true, Next: 'UseFinishedJob' },
      ],
      Default: 'CustomizeModel',
    });
    expect(states.UseRecorded).toMatchObject({ Type: 'Pass', ResultPath: '$.served', Next: 'RecordModel' });
    expect(states.UseFinishedJob).toMatchObject({
      Type: 'Pass',
      ResultPath: '$.job',
      Next: 'ServingNotStarted',
    });
    expect(states.CustomizeModel).toMatchObject({
      Type: 'Task',
      Resource: 'arn:aws:states:::bedrock:createModelCustomizationJob.sync',
      Next: 'ServingNotStarted',
      ResultPath: '$.job',
      TimeoutSeconds: 7 * 24 * 3600,
      Parameters: {
        BaseModelIdentifier: 'amazon.nova-micro-v1:0:128k',
        CustomizationType: 'FINE_TUNING',
        'JobName.$': '$.prepared.value.jobName',
        'CustomModelName.$': '$.prepared.value.jobName',
        'ClientRequestToken.$': '$.prepared.value.token',
        TrainingDataConfig: { 'S3Uri.$': '$.prepared.value.trainingUri' },
        OutputDataConfig: { 'S3Uri.$': '$.prepared.value.outputUri' },
      },
    });
    expect(states.CustomizeModel.Parameters).not.toHaveProperty('HyperParameters');
    expect(states['ServingReady?']).toMatchObject({
      Choices: [{ Variable: '$.served.value.status', StringEquals: 'ready', Next: 'RecordModel' }],
      Default: 'WaitForServing',
    });
    expect(states.WaitForServing).toMatchObject({ Type: 'Wait', Seconds: 60, Next: 'ServeModel' });
    expect(states.RecordModel).toMatchObject({ End: true, OutputPath: '$.Payload' });
  });

  it('retries each step on the transient errors the steps name, and the job on Bedrock throttling and outages', () => {
    // Prepare
    const { definition } = synthesize({});

    // Act
    const retried = (state: string) =>
      (definition.States[state].Retry as { ErrorEquals: string[] }[]).flatMap((r) => r.ErrorEquals);

    // Assess
    for (const step of ['PrepareTuning', 'ServeModel', 'RecordModel'])
      expect(retried(step)).toEqual(
        expect.arrayContaining(['StoreTransientError', 'ModelTransientError', 'Sandbox.Timedout']),
      );
    expect(retried('CustomizeModel')).toEqual([
      'Bedrock.ThrottlingException',
      'Bedrock.InternalServerException',
      'Bedrock.ServiceUnavailableException',
    ]);
    expect(retried('PrepareTuning')).not.toContain('TuningInProgressError');
  });

  it('refuses at synth a base model it cannot tune, an on-demand deployment of a non-Nova model, and an ssm: spec that would never be written', () => {
    // Act
    const act = () =>
      synthesize({
        models: { ...models, induce: 'ssm:/SaferInstruct/induce-model' },
        tuning: { baseModel: 'amazon.titan-embed-text-v2:0', serving: 'deployment' },
      });
    const unwritten = () =>
      synthesize({
        models: { ...models, induce: 'ssm:/SaferInstruct/induce-model' },
        tuning: { baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k' },
      });

    // Assess
    expect(act).toThrowError(/tuning\.baseModel: [\s\S]*tuning\.serving is deployment/);
    expect(unwritten).toThrowError(
      /models\.induce is ssm:\/SaferInstruct\/induce-model, but with tuning\.serving none/,
    );
  });

  it('passes the configured hyperparameters as strings and the parameter name to PrepareTuning', () => {
    // Prepare
    const config = {
      tuning: { hyperParameters: { epochCount: 2, learningRate: '0.00001' }, parameterName: '/team/x' },
    };

    // Act
    const { definition } = synthesize(config);

    // Assess
    expect(definition.States.CustomizeModel.Parameters.HyperParameters).toEqual({
      epochCount: '2',
      learningRate: '0.00001',
    });
    expect(definition.States.PrepareTuning.Parameters.Payload).toMatchObject({
      'event.$': '$',
      parameterName: '/team/x',
      tuning: { baseModel: 'amazon.nova-micro-v1:0:128k', hyperParameters: { epochCount: '2' } },
    });
  });

  it('gives Bedrock a role it alone assumes, for jobs of this account, reading the uploads and writing output only', () => {
    // Prepare
    const { stack, template, id, statements } = synthesize({});

    // Act
    const role = template.toJSON().Resources[id(stack.tuning.bedrockRole)].Properties;

    // Assess
    expect(resolveIntrinsics(role.AssumeRolePolicyDocument.Statement, { Resources: {} })).toEqual([
      {
        Action: 'sts:AssumeRole',
        Effect: 'Allow',
        Principal: { Service: 'bedrock.amazonaws.com' },
        Condition: {
          StringEquals: { 'aws:SourceAccount': LOCAL_ENV.account },
          ArnLike: { 'aws:SourceArn': arn('model-customization-job/*') },
        },
      },
    ]);
    const bucket = id(stack.bucket);
    expect(actionsOn(statements(id(stack.tuning.bedrockRole)))).toEqual([
      `s3:GetObject ${bucket}.Arn/tuning/incoming/*`,
      `s3:GetObject ${bucket}.Arn/tuning/output/*`,
      `s3:ListBucket ${bucket}.Arn`,
      `s3:PutObject ${bucket}.Arn/tuning/output/*`,
    ]);
    const list = statements(id(stack.tuning.bedrockRole)).find((s) => s.Action === 's3:ListBucket');
    expect(list?.Condition).toEqual({
      StringLike: { 's3:prefix': ['tuning/incoming/*', 'tuning/output/*'] },
    });
  });

  it('lets the workflow create, poll and stop customization jobs and pass only the Bedrock role', () => {
    // Prepare
    const { stack, id, statements, resources } = synthesize({});

    // Act
    const machineRole = resources[id(stack.tuning.stateMachine)]?.Properties.RoleArn['Fn::GetAtt'][0];
    const granted = actionsOn(
      statements(machineRole).filter((s) => [s.Action].flat().some((a) => /^(bedrock|iam):/.test(a))),
    );

    // Assess
    expect(granted).toEqual([
      `bedrock:CreateModelCustomizationJob arn:aws:bedrock:${LOCAL_ENV.region}::foundation-model/amazon.nova-micro-v1:0:128k,${arn('custom-model/*')},${arn('model-customization-job/*')}`,
      `bedrock:GetModelCustomizationJob ${arn('model-customization-job/*')}`,
      `bedrock:StopModelCustomizationJob ${arn('model-customization-job/*')}`,
      `iam:PassRole ${id(stack.tuning.bedrockRole)}.Arn`,
    ]);
  });

  it.each([
    [
      'Nova by default: a per-token deployment',
      {},
      ['CreateCustomModelDeployment', 'GetCustomModelDeployment'],
    ],
    [
      'provisioned throughput only when asked',
      { serving: 'provisioned' },
      ['CreateProvisionedModelThroughput', 'GetProvisionedModelThroughput'],
    ],
    ['nothing for a model served otherwise', { baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k' }, []],
  ] as const)('lets ServeModel create %s', (_, tuning, actions) => {
    // Prepare
    const { stack, id, statements } = synthesize({ tuning });

    // Act
    const serving = statements(id(stack.tuning.functions['serve-model'].role))
      .flatMap((s) => [s.Action].flat())
      .filter((a) => /Deployment|Provisioned/.test(a));

    // Assess
    expect(serving.map((a) => a.replace('bedrock:', '')).sort()).toEqual([...actions].sort());
  });

  it('lets RecordModel write the manifest and the one parameter, and PrepareTuning read uploads and manifests', () => {
    // Prepare
    const { stack, id, statements } = synthesize({});
    const bucket = id(stack.bucket);

    // Act
    const record = actionsOn(statements(id(stack.tuning.functions['record-model'].role)));
    const prepare = actionsOn(statements(id(stack.tuning.functions['prepare-tuning'].role)));

    // Assess
    expect(record).toContain(`s3:PutObject ${bucket}.Arn/tuning/manifests/*.json`);
    expect(record).toContain(
      `ssm:PutParameter arn:aws:ssm:${LOCAL_ENV.region}:${LOCAL_ENV.account}:parameter/SaferInstruct/induce-model`,
    );
    expect(record.filter((a) => a.startsWith('s3:Get'))).toEqual([]);
    expect(prepare).toContain(
      `s3:GetObject ${bucket}.Arn/tuning/incoming/*,${bucket}.Arn/tuning/manifests/*.json`,
    );
    expect(prepare.filter((a) => a.startsWith('s3:Put') || a.startsWith('ssm:'))).toEqual([]);
  });

  it('starts on uploads under tuning/incoming/ and outputs the workflow and the parameter', () => {
    // Prepare
    const { stack, template, id } = synthesize({});

    // Act
    const rules = Object.values(template.findResources('AWS::Events::Rule')).map((r) => r.Properties);

    // Assess
    const tuningRule = rules.find((r) => r.EventPattern.detail.object.key[0].prefix === 'tuning/incoming/');
    expect(tuningRule?.Targets[0].Arn).toEqual({ Ref: id(stack.tuning.stateMachine) });
    template.hasOutput('ReverseTuningArn', { Value: { Ref: id(stack.tuning.stateMachine) } });
    template.hasOutput('InduceModelParameter', { Value: '/SaferInstruct/induce-model' });
  });
});

describe('pipeline access to tuned models', () => {
  it('lets split read an ssm: parameter and induce invoke the tuned models of the account', () => {
    // Prepare
    const config = { models: { ...models, induce: 'ssm:/SaferInstruct/induce-model' } };

    // Act
    const { stack, id, statements } = synthesize(config);

    // Assess
    const split = actionsOn(statements(id(stack.functions.split.role)));
    expect(split).toContain(
      `ssm:GetParameter arn:aws:ssm:${LOCAL_ENV.region}:${LOCAL_ENV.account}:parameter/SaferInstruct/induce-model`,
    );
    const induce = actionsOn(statements(id(stack.functions.induce.role))).filter((a) =>
      a.startsWith('bedrock:'),
    );
    expect(induce).toEqual([
      `bedrock:InvokeModel ${['custom-model', 'provisioned-model', 'imported-model', 'custom-model-deployment'].map((r) => arn(`${r}/*`)).join(',')}`,
    ]);
    expect(actionsOn(statements(id(stack.functions.filter.role))).join('\n')).not.toContain('custom-model');
  });

  it('grants a SageMaker endpoint and a custom model ARN exactly', () => {
    // Prepare
    const custom = 'arn:aws:bedrock:us-west-2:123456789012:provisioned-model/abc#llama';
    const config = {
      models: { ...models, induce: 'sagemaker:My-Endpoint#messages', filter: `bedrock-custom:${custom}` },
    };

    // Act
    const { stack, id, statements } = synthesize(config);

    // Assess
    expect(actionsOn(statements(id(stack.functions.induce.role)))).toContain(
      `sagemaker:InvokeEndpoint arn:aws:sagemaker:${LOCAL_ENV.region}:${LOCAL_ENV.account}:endpoint/my-endpoint`,
    );
    expect(actionsOn(statements(id(stack.functions.filter.role)))).toContain(
      'bedrock:InvokeModel arn:aws:bedrock:us-west-2:123456789012:provisioned-model/abc',
    );
  });
});
