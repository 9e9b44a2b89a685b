import { Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { FAIL_SYNTH_ON_VALIDATION_ERRORS_CONTEXT } from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import { afterAll, describe, expect, it } from 'vitest';
import { applyNagAcknowledgements } from '../../lib/infra/nag.js';
import { PipelineStack } from '../../lib/infra/pipeline-stack.js';
import { definitionOf, LOCAL_ENV, resolveIntrinsics } from '../../lib/local/definition.js';
import { type PipelineConfigInput, parseConfig } from '../../lib/pipeline/config.js';
import { METRICS_NAMESPACE, RUN_COMPLETED, STAGE_METRICS } from '../../lib/pipeline/observability.js';
import { MODEL_STAGES, STAGES } from '../../lib/pipeline/schemas.js';
import { testApps } from '../support/cdk-app.js';
import { nagFindings } from '../support/nag.js';

// biome-ignore lint/suspicious/noExplicitAny: a synthesized template is untyped JSON, read by path in assertions.
type Json = any;
type Resources = Record<string, { Type: string; Properties: Record<string, Json> }>;
type Statement = { Action: string | string[]; Resource: unknown; Effect: string; Condition?: Json };

const HAIKU = 'bedrock:anthropic.claude-3-haiku-20240307-v1:0';
const ON_DEMAND = {
  models: { induce: HAIKU, filter: HAIKU, respond: HAIKU, evaluate: HAIKU },
} satisfies PipelineConfigInput;
const NOVA = 'bedrock:amazon.nova-micro-v1:0';
const BATCH = {
  mode: 'batch',
  models: { induce: NOVA, filter: NOVA, respond: NOVA, evaluate: NOVA },
} satisfies PipelineConfigInput;

const apps = testApps();
afterAll(apps.cleanup);
const { newApp } = apps;

function synthesize(config: PipelineConfigInput) {
  const stack = new PipelineStack(newApp(), 'SaferInstruct', { config: parseConfig(config) });
  const template = Template.fromStack(stack);
  const resources = template.toJSON().Resources as Resources;
  const resolve = (value: unknown) => resolveIntrinsics(value, { Resources: resources });
  const definition = definitionOf({ Resources: resources }) as { States: Record<string, Json> };
  return { stack, template, resources, resolve, definition };
}

/** Synthesizes a config once, on first use: a synth takes seconds, and most tests only read it. */
function once<T>(make: () => T): () => T {
  let made: { value: T } | undefined;
  return () => {
    made ??= { value: make() };
    return made.value;
  };
}
const onDemandStack = once(() => synthesize(ON_DEMAND));
const batchStack = once(() => synthesize(BATCH));

/** The dashboard's body as one string, tokens resolved to local stand-ins. */
function dashboardBody(synth: ReturnType<typeof synthesize>): string {
  const dashboards = Object.values(synth.resources).filter((r) => r.Type === 'AWS::CloudWatch::Dashboard');
  expect(dashboards).toHaveLength(1);
  return String(synth.resolve(dashboards[0]?.Properties.DashboardBody));
}

/** The metrics of a dashboard widget body: each `[namespace, name, dim, value, ...]` array with its options. */
const metricsOf = (body: string): Json[][] =>
  (JSON.parse(body).widgets as Json[]).flatMap((w) => (w.properties.metrics ?? []) as Json[][]);

describe('PipelineObservability dashboard', () => {
  it('graphs every stage metric per stage from the SaferInstruct namespace, under the stack as service', () => {
    // Prepare
    const synth = onDemandStack();

    // Act
    const metrics = metricsOf(dashboardBody(synth)).filter((m) => m[0] === METRICS_NAMESPACE);

    // Assess
    const series = new Set(metrics.map((m) => `${m[1]} ${m[2]}=${m[3]} ${m[4]}=${m[5]}`));
    for (const stage of STAGES)
      for (const name of ['RecordsIn', 'RecordsOut', 'Rejected'])
        expect(series).toContain(`${name} service=SaferInstruct stage=${stage}`);
    for (const stage of MODEL_STAGES)
      for (const name of STAGE_METRICS)
        expect(series).toContain(`${name} service=SaferInstruct stage=${stage}`);
    expect([...series].some((s) => s.endsWith('stage=batch'))).toBe(false);
    expect(new Set(metrics.map((m) => (m.at(-1) as Json).stat))).toEqual(new Set(['Sum']));
  });

  it('graphs Lambda errors and duration per stage function, and executions started, succeeded and failed', () => {
    // Prepare
    const synth = onDemandStack();

    // Act
    const metrics = metricsOf(dashboardBody(synth));

    // Assess
    const lambda = metrics.filter((m) => m[0] === 'AWS/Lambda');
    for (const name of ['Errors', 'Duration'])
      expect(
        lambda
          .filter((m) => m[1] === name)
          .map((m) => (m.at(-1) as Json).label)
          .sort(),
      ).toEqual(['dedup', 'evaluate', 'filter', 'induce', 'merge', 'respond', 'split']);
    const machineArn = synth.resolve({
      Ref: synth.stack.getLogicalId(synth.stack.pipeline.stateMachine.node.defaultChild as never),
    });
    const executions = metrics.filter((m) => m[0] === 'AWS/States');
    expect(executions.map((m) => m[1])).toEqual(
      expect.arrayContaining(['ExecutionsStarted', 'ExecutionsSucceeded', 'ExecutionsFailed']),
    );
    for (const m of executions) expect(m.slice(2, 4)).toEqual(['StateMachineArn', machineArn]);
    synth.template.hasOutput('DashboardName', {});
  });

  it('adds the batch stage and the batch functions in mode batch', () => {
    // Prepare
    const synth = batchStack();

    // Act
    const metrics = metricsOf(dashboardBody(synth));

    // Assess
    const batchSeries = metrics
      .filter((m) => m[0] === METRICS_NAMESPACE && m[5] === 'batch')
      .map((m) => m[1])
      .sort();
    expect(batchSeries).toEqual(
      expect.arrayContaining([
        'CostUsd',
        'InputTokens',
        'ModelCalls',
        'OutputTokens',
        'RecordsIn',
        'RecordsOut',
      ]),
    );
    const labels = metrics
      .filter((m) => m[0] === 'AWS/Lambda' && m[1] === 'Errors')
      .map((m) => m.at(-1).label);
    expect(labels).toEqual(expect.arrayContaining(['batch', 'batch-callback']));
  });
});

describe('Powertools environment', () => {
  it.each([
    ['on-demand', onDemandStack],
    ['batch', batchStack],
  ])('sets the service and the metrics namespace on every function in mode %s', (_, stack) => {
    // Prepare
    const { resources } = stack();

    // Act
    const environments = Object.values(resources)
      .filter((r) => r.Type === 'AWS::Lambda::Function' && r.Properties.Environment?.Variables?.STAGE)
      .map((r) => r.Properties.Environment.Variables);

    // Assess
    expect(environments.length).toBeGreaterThanOrEqual(10);
    for (const variables of environments)
      expect(variables).toMatchObject({
        POWERTOOLS_SERVICE_NAME: 'SaferInstruct',
        POWERTOOLS_METRICS_NAMESPACE: 'SaferInstruct',
      });
  });

  it('grants no cloudwatch:PutMetricData: EMF needs only the log group each function already writes', () => {
    // Prepare
    const { resources } = onDemandStack();

    // Act
    const actions = Object.values(resources)
      .filter((r) => r.Type === 'AWS::IAM::Policy')
      .flatMap((r) => r.Properties.PolicyDocument.Statement as Statement[])
      .flatMap((s) => [s.Action].flat());

    // Assess
    expect(actions.filter((a) => a.startsWith('cloudwatch:'))).toEqual([]);
  });
});

describe('Run Completed event', () => {
  it.each([
    ['on-demand', onDemandStack],
    ['batch', batchStack],
  ])(
    "follows Merge in mode %s, with the report's figures by JSONPath and Merge's output kept",
    (_, stack) => {
      // Prepare
      const { definition } = stack();

      // Act
      const { Merge: merge, RunCompleted: completed } = definition.States;

      // Assess
      expect(merge.Next).toBe('RunCompleted');
      expect(merge).not.toHaveProperty('End');
      expect(completed).toMatchObject({
        Type: 'Task',
        Resource: 'arn:aws:states:::events:putEvents',
        ResultPath: null,
        End: true,
      });
      expect(completed).not.toHaveProperty('QueryLanguage');
      expect(completed).not.toHaveProperty('Assign');
      expect(completed.Parameters).toEqual({
        Entries: [
          {
            Source: RUN_COMPLETED.source,
            DetailType: RUN_COMPLETED.detailType,
            Detail: {
              'runId.$': '$.runId',
              'executionId.$': '$$.Execution.Id',
              'status.$': '$.completion.status',
              'pairs.$': '$.pairs',
              'rejects.$': '$.rejects',
              'inputRecords.$': '$.completion.inputRecords',
              'failedShards.$': '$.completion.failedShards',
              'calls.$': '$.completion.calls',
              'costUsd.$': '$.completion.costUsd',
              'mode.$': '$.completion.mode',
              'reportKey.$': '$.reportKey',
            },
          },
        ],
      });
      expect(RUN_COMPLETED).toEqual({ source: 'safer-instruct', detailType: 'Run Completed' });
    },
  );

  it('lets the state machine put events on the default bus of its account and region, and nowhere else', () => {
    // Prepare
    const { stack, resources, resolve } = onDemandStack();
    const roleId = stack.getLogicalId(stack.pipeline.stateMachine.role.node.defaultChild as never);

    // Act
    const eventStatements = Object.values(resources)
      .filter((r) => r.Type === 'AWS::IAM::Policy')
      .flatMap((r) =>
        (r.Properties.PolicyDocument.Statement as Statement[]).map((s) => ({
          roles: r.Properties.Roles.map((ref: Json) => ref.Ref),
          statement: resolve(s) as Statement,
        })),
      )
      .filter(({ statement }) => [statement.Action].flat().some((a) => a.startsWith('events:')));

    // Assess
    expect(eventStatements).toEqual([
      {
        roles: [roleId],
        statement: {
          Effect: 'Allow',
          Action: 'events:PutEvents',
          Resource: `arn:${LOCAL_ENV.partition}:events:${LOCAL_ENV.region}:${LOCAL_ENV.account}:event-bus/default`,
        },
      },
    ]);
  });
});

describe('observability cdk-nag', () => {
  it.each([
    ['on-demand', ON_DEMAND],
    ['batch', BATCH],
  ])('leaves no unacknowledged AwsSolutions error or warning in mode %s', (_, config) => {
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
