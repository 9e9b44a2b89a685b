import { Duration, Stack } from 'aws-cdk-lib';
import {
  Dashboard,
  GraphWidget,
  type IMetric,
  MathExpression,
  Metric,
  SingleValueWidget,
  Stats,
  TextWidget,
} from 'aws-cdk-lib/aws-cloudwatch';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import type { IStateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import {
  BATCH_STAGE,
  METRICS_NAMESPACE,
  RUN_COMPLETED,
  STAGE_DIMENSION,
  type StageMetric,
} from '../pipeline/observability.js';
import { MODEL_STAGES, STAGES } from '../pipeline/schemas.js';

/** Properties of a PipelineObservability. */
export interface PipelineObservabilityProps {
  /** The workflow of a run. */
  readonly stateMachine: IStateMachine;
  /** The workflow's Lambda functions, by the name their lines carry. */
  readonly functions: Readonly<Record<string, IFunction>>;
  /** The `service` dimension the functions publish their stage metrics under. */
  readonly service: string;
  /**
   * Whether model stages may run as Bedrock batch jobs (modes `batch` and `auto`): adds the `batch` stage.
   * @default false
   */
  readonly batch?: boolean;
  /**
   * The period of every graph.
   * @default Duration.minutes(5)
   */
  readonly period?: Duration;
}

const WIDTH = 8;
const HEIGHT = 6;

/**
 * A CloudWatch dashboard of the pipeline: per stage, the records in, out and rejected, model calls,
 * tokens, throttles and cost that the stage functions publish as EMF (namespace `SaferInstruct`,
 * dimensions `service` and `stage`); per function, Lambda errors and duration; and the workflow's
 * executions started, succeeded and failed.
 */
export class PipelineObservability extends Construct {
  /** The dashboard. */
  readonly dashboard: Dashboard;

  constructor(scope: Construct, id: string, props: PipelineObservabilityProps) {
    super(scope, id);
    const period = props.period ?? Duration.minutes(5);
    const modelStages: readonly string[] = [...MODEL_STAGES, ...(props.batch ? [BATCH_STAGE] : [])];
    const allStages: readonly string[] = [...STAGES, ...(props.batch ? [BATCH_STAGE] : [])];

    const stageMetric = (metricName: StageMetric, stage: string) =>
      new Metric({
        namespace: METRICS_NAMESPACE,
        metricName,
        dimensionsMap: { service: props.service, [STAGE_DIMENSION]: stage },
        statistic: Stats.SUM,
        period,
        label: stage,
      });
    const perStage = (title: string, metricName: StageMetric, stages: readonly string[]) =>
      new GraphWidget({
        title,
        left: stages.map((stage) => stageMetric(metricName, stage)),
        width: WIDTH,
        height: HEIGHT,
      });
    /** A metric summed over stages, for a single value over the dashboard's time range. */
    const total = (label: string, metricName: StageMetric, stages: readonly string[]) => {
      // Ids are unique across the widget: one prefix per metric.
      const ids = stages.map((_, i) => `${metricName.toLowerCase()}${i}`);
      return new MathExpression({
        label,
        expression: `SUM([${ids.join(', ')}])`,
        usingMetrics: Object.fromEntries(stages.map((stage, i) => [ids[i], stageMetric(metricName, stage)])),
        period,
      });
    };
    const perFunction = (title: string, metric: (fn: IFunction, label: string) => IMetric) =>
      new GraphWidget({
        title,
        left: Object.entries(props.functions).map(([label, fn]) => metric(fn, label)),
        width: WIDTH,
        height: HEIGHT,
      });
    const machine = props.stateMachine;

    this.dashboard = new Dashboard(this, 'Dashboard', {
      dashboardName: `${Stack.of(this).stackName}-pipeline`,
      defaultInterval: Duration.days(1),
    });
    this.dashboard.addWidgets(
      new TextWidget({
        markdown:
          `# ${Stack.of(this).stackName} pipeline\n` +
          `Stage metrics: namespace \`${METRICS_NAMESPACE}\`, dimensions \`service\` and \`stage\`, published by ` +
          'each stage invocation from the stats it wrote. Each finished run also puts a ' +
          `\`${RUN_COMPLETED.detailType}\` event (source \`${RUN_COMPLETED.source}\`) on the default event bus.`,
        width: 24,
        height: 2,
      }),
    );
    this.dashboard.addWidgets(
      new SingleValueWidget({
        title: 'Over the time range',
        metrics: [
          total('Records in (split)', 'RecordsIn', ['split']),
          total('Pairs out (merge)', 'RecordsOut', ['merge']),
          total('Model calls', 'ModelCalls', modelStages),
          total('Throttled', 'Throttled', modelStages),
          total('Cost (USD)', 'CostUsd', modelStages),
        ],
        setPeriodToTimeRange: true,
        width: 24,
        height: 3,
      }),
    );
    this.dashboard.addWidgets(
      perStage('Records in per stage', 'RecordsIn', allStages),
      perStage('Records out per stage', 'RecordsOut', allStages),
      perStage('Rejected per stage', 'Rejected', STAGES),
    );
    this.dashboard.addWidgets(
      perStage('Model calls per stage', 'ModelCalls', modelStages),
      perStage('Input tokens per stage', 'InputTokens', modelStages),
      perStage('Output tokens per stage', 'OutputTokens', modelStages),
    );
    this.dashboard.addWidgets(
      perStage('Throttled calls per stage', 'Throttled', modelStages),
      perStage('Cost (USD) per stage', 'CostUsd', modelStages),
      new GraphWidget({
        title: 'Executions',
        left: [
          machine.metricStarted({ period, label: 'started' }),
          machine.metricSucceeded({ period, label: 'succeeded' }),
          machine.metricFailed({ period, label: 'failed' }),
          machine.metricTimedOut({ period, label: 'timed out' }),
          machine.metricAborted({ period, label: 'aborted' }),
        ],
        width: WIDTH,
        height: HEIGHT,
      }),
    );
    this.dashboard.addWidgets(
      perFunction('Lambda errors per function', (fn, label) => fn.metricErrors({ period, label })),
      perFunction('Lambda duration p99 per function', (fn, label) =>
        fn.metricDuration({ period, label, statistic: Stats.p(99) }),
      ),
      perFunction('Lambda throttles per function', (fn, label) => fn.metricThrottles({ period, label })),
    );
  }
}
