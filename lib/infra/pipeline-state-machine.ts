import { Duration, Names, RemovalPolicy } from 'aws-cdk-lib';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import {
  Chain,
  Choice,
  Condition,
  DefinitionBody,
  Fail,
  IntegrationPattern,
  JitterType,
  JsonPath,
  LogLevel,
  Map as MapState,
  Pass,
  StateMachine,
  StateMachineType,
  Succeed,
  TaskInput,
  Timeout,
} from 'aws-cdk-lib/aws-stepfunctions';
import { EventBridgePutEvents, LambdaInvoke } from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import type { PipelineConfig } from '../pipeline/config.js';
import { RUN_COMPLETED } from '../pipeline/observability.js';
import type { ModelStage } from '../pipeline/schemas.js';
import type { FunctionStage } from './stage-function.js';

/** Properties of a PipelineStateMachine. */
export interface PipelineStateMachineProps {
  /** The function of each stage. */
  readonly functions: Readonly<Record<FunctionStage, IFunction>>;
  /** The pipeline configuration: passed to Split, and `concurrency` is the Map's MaxConcurrency. */
  readonly config: PipelineConfig;
  /** The batch function (plan, submit, join), needed in modes `batch` and `auto`. */
  readonly batchFunction?: IFunction;
}

/** Every task gets the Lambda maximum; the local engine's 60 s default is too short for a model stage. */
const TASK_TIMEOUT = Duration.minutes(15);

/**
 * The Standard workflow of one run: `Split` the upload into shards, skip a redelivered event
 * (`DuplicateEvent?`), drop duplicate texts across all shards (`DedupTexts`), run `Induce` over each
 * shard in an inline Map (`InduceShards`), drop duplicate instructions (`DedupInstructions`), run
 * `Filter -> Respond -> Evaluate` over each shard in a second inline Map (`JudgeShards`), then
 * `Merge`, and put a `Run Completed` event on the default bus (`RunCompleted`). A shard whose stage
 * fails after its retries becomes a `ShardFailed` result and the run goes on without it.
 *
 * JSONPath and inline Map only: the local engine cannot run Distributed Map, JSONata or Assign.
 */
export class PipelineStateMachine extends Construct {
  /** The state machine. */
  readonly stateMachine: StateMachine;
  /** Where execution history goes (without execution data: records must not leak into logs). */
  readonly logGroup: LogGroup;

  constructor(scope: Construct, id: string, props: PipelineStateMachineProps) {
    super(scope, id);
    const { functions } = props;

    // Split and merge redo their work whole when retried, so a store hiccup or a timeout is retried.
    const storeRetry = {
      errors: ['StoreTransientError', 'Sandbox.Timedout'],
      interval: Duration.seconds(2),
      backoffRate: 2,
      maxAttempts: 4,
      jitterStrategy: JitterType.FULL,
    };
    const split = new LambdaInvoke(this, 'Split', {
      lambdaFunction: functions.split,
      payload: TaskInput.fromObject({
        event: JsonPath.entirePayload,
        executionId: JsonPath.stringAt('$$.Execution.Id'),
        // The config is part of the deployed workflow: every run of this definition uses it, and the
        // local engine, running the same definition, gets it the same way.
        config: props.config,
      }),
      outputPath: '$.Payload',
      taskTimeout: Timeout.duration(TASK_TIMEOUT),
    }).addRetry(storeRetry);

    /** Where a Map's tasks go when they fail for good; a state belongs to one Map, so each has its own. */
    const catchStates = (prefix: string) => ({
      shardFailed: new Pass(this, `${prefix}ShardFailed`, {
        parameters: {
          shard: JsonPath.stringAt('$.shard'),
          failed: true,
          error: JsonPath.stringAt('$.error.Error'),
        },
      }),
      // A model the pipeline cannot use (no access, no such model, no weights) would fail every shard
      // the same way: fail the run loudly instead of turning every record into a reject.
      modelUnusable: new Fail(this, `${prefix}ModelUnusable`, {
        error: 'ModelConfigError',
        cause: 'A stage cannot use its configured model; the failed task names the model and the problem.',
      }),
      // A budget is the run's, not a shard's: stop the run with everything written kept, to resume.
      budgetExceeded: new Fail(this, `${prefix}BudgetExceeded`, {
        error: 'BudgetExceededError',
        cause:
          'A paid model call would have passed the run budget (--max-budget); what was written is kept to resume.',
      }),
    });
    const modelTask = (
      stateId: string,
      fn: IFunction,
      { shardFailed, modelUnusable, budgetExceeded }: ReturnType<typeof catchStates>,
    ) =>
      new LambdaInvoke(this, stateId, {
        lambdaFunction: fn,
        payload: TaskInput.fromJsonPathAt('$'),
        outputPath: '$.Payload',
        taskTimeout: Timeout.duration(TASK_TIMEOUT),
        retryOnServiceExceptions: true,
      })
        // Provider quotas are per minute: back off for minutes, not seconds.
        .addRetry({
          errors: ['ModelThrottledError'],
          interval: Duration.seconds(10),
          backoffRate: 2,
          maxAttempts: 8,
          maxDelay: Duration.minutes(5),
          jitterStrategy: JitterType.FULL,
        })
        .addRetry({
          // Sandbox.Timedout is how Step Functions reports a Lambda that ran out of time.
          errors: [
            'ModelTransientError',
            'StoreTransientError',
            'Lambda.TooManyRequestsException',
            'States.Timeout',
            'Sandbox.Timedout',
          ],
          interval: Duration.seconds(2),
          backoffRate: 2,
          maxAttempts: 4,
          jitterStrategy: JitterType.FULL,
        })
        .addCatch(modelUnusable, { errors: ['ModelConfigError'] })
        .addCatch(budgetExceeded, { errors: ['BudgetExceededError'] })
        .addCatch(shardFailed, { errors: ['States.ALL'], resultPath: '$.error' });

    // Dedup compares records across every shard, so each pass is one task between the Maps.
    const dedupTask = (stateId: string, field: 'text' | 'instruction', resultPath: string) =>
      new LambdaInvoke(this, stateId, {
        lambdaFunction: functions.dedup,
        payload: TaskInput.fromObject({ runId: JsonPath.stringAt('$.runId'), field }),
        resultSelector: { 'shards.$': '$.Payload.shards', 'records.$': '$.Payload.records' },
        resultPath,
        taskTimeout: Timeout.duration(TASK_TIMEOUT),
      })
        // A pass keeps each shard it finished: a retry after a timeout seeds its index from them and
        // goes on where it stopped. States.Timeout: the task's clock may run out before the Lambda's.
        .addRetry({ ...storeRetry, errors: [...storeRetry.errors, 'States.Timeout'] });
    const shardMap = (stateId: string, itemsPath: string, resultPath: string) =>
      new MapState(this, stateId, {
        itemsPath,
        itemSelector: {
          runId: JsonPath.stringAt('$.runId'),
          shard: JsonPath.stringAt('$$.Map.Item.Value'),
        },
        maxConcurrency: props.config.concurrency,
        resultPath,
      });

    const induceCatch = catchStates('Induce');
    const induceShards = shardMap('InduceShards', '$.texts.shards', '$.induceResults').itemProcessor(
      modelTask('Induce', functions.induce, induceCatch),
    );

    const { batchFunction } = props;
    const batchMode = props.config.mode !== 'on-demand';
    if (batchMode && !batchFunction)
      throw new Error(`mode ${props.config.mode} needs the batch function: pass batchFunction`);
    /**
     * Batch mode's steps before a model stage: `PlanX` writes the stage's jobs, the `XJobs` Map submits each
     * (at most `batch.maxJobs` at once) and waits on a task token, without paying for the wait, until the
     * job's state-change event releases it, then `JoinXJob` puts its answers into the call cache. Whatever
     * a job did not answer, and a whole stage whose batch steps failed, is paid on-demand by the stage.
     */
    const batchSteps = (stage: ModelStage, shardsPath: string) => {
      const name = stage[0]?.toUpperCase() + stage.slice(1);
      const fn = batchFunction as IFunction;
      const batchTask = (stateId: string, payload: Record<string, unknown>, resultPath: string) =>
        new LambdaInvoke(this, stateId, {
          lambdaFunction: fn,
          payload: TaskInput.fromObject(payload),
          resultSelector: { 'value.$': '$.Payload' },
          resultPath,
          taskTimeout: Timeout.duration(TASK_TIMEOUT),
          retryOnServiceExceptions: true,
        })
          // Bedrock's control plane throttles reads of many jobs ending at once: a joined job is paid for.
          .addRetry({
            errors: ['ModelThrottledError', 'Lambda.TooManyRequestsException'],
            interval: Duration.seconds(30),
            backoffRate: 2,
            maxAttempts: 8,
            maxDelay: Duration.minutes(10),
            jitterStrategy: JitterType.FULL,
          })
          .addRetry({
            ...storeRetry,
            errors: [...storeRetry.errors, 'ModelTransientError', 'States.Timeout'],
          });
      // Where the stage goes on, its calls answered by jobs or not: what no job answered is paid on-demand.
      const batchDone = new Pass(this, `${name}BatchDone`);
      const plan = batchTask(
        `Plan${name}`,
        {
          action: 'plan',
          runId: JsonPath.stringAt('$.runId'),
          stage,
          shards: JsonPath.listAt(shardsPath),
        },
        '$.batchPlan',
      ).addCatch(batchDone, { errors: ['States.ALL'], resultPath: '$.batchError' });
      const ids = { runId: JsonPath.stringAt('$.runId'), stage, jobName: JsonPath.stringAt('$.jobName') };
      const join = batchTask(`Join${name}Job`, { action: 'join', ...ids }, '$.stats');
      const submit = new LambdaInvoke(this, `Submit${name}Job`, {
        lambdaFunction: fn,
        integrationPattern: IntegrationPattern.WAIT_FOR_TASK_TOKEN,
        payload: TaskInput.fromObject({ action: 'submit', ...ids, taskToken: JsonPath.taskToken }),
        resultPath: '$.end',
        // Bedrock expires a job that has not run within its timeout; a wait that outlives that is stopped.
        taskTimeout: Timeout.duration(Duration.hours(props.config.batch.timeoutHours * 2)),
      })
        // A quota of jobs in flight per model (shared with other runs) clears as jobs end: minutes.
        .addRetry({
          errors: ['ModelThrottledError'],
          interval: Duration.minutes(1),
          backoffRate: 2,
          maxAttempts: 10,
          maxDelay: Duration.minutes(15),
          jitterStrategy: JitterType.FULL,
        })
        .addRetry({
          // Sandbox.Timedout: the submit Lambda ran out of time; a resubmit with the same token is harmless.
          errors: [
            'ModelTransientError',
            'StoreTransientError',
            'Lambda.TooManyRequestsException',
            'Sandbox.Timedout',
          ],
          interval: Duration.seconds(2),
          backoffRate: 2,
          maxAttempts: 4,
          jitterStrategy: JitterType.FULL,
        })
        // Already ended, refused, or waited on too long: join what there is; the rest goes on-demand.
        .addCatch(join, { errors: ['States.ALL'], resultPath: '$.submitError' });
      const jobDone = new Pass(this, `${name}JobDone`);
      const jobs = new MapState(this, `${name}Jobs`, {
        itemsPath: '$.batchPlan.value.jobs',
        itemSelector: {
          runId: JsonPath.stringAt('$.runId'),
          jobName: JsonPath.stringAt('$$.Map.Item.Value'),
        },
        maxConcurrency: props.config.batch.maxJobs,
        resultPath: JsonPath.DISCARD,
      }).itemProcessor(
        submit
          .next(join.addCatch(jobDone, { errors: ['States.ALL'], resultPath: '$.joinError' }))
          .next(jobDone),
      );
      return Chain.start(plan).next(jobs).next(batchDone);
    };

    /**
     * A judge stage's Map over the outcomes of the stage before: a shard that failed there stays failed
     * (its failure is passed on to Merge), the others run the stage.
     */
    const judgeMap = (stage: 'respond' | 'evaluate', itemsPath: string, resultPath: string) => {
      const name = stage[0]?.toUpperCase() + stage.slice(1);
      return new MapState(this, `${name}Shards`, {
        itemsPath,
        itemSelector: {
          runId: JsonPath.stringAt('$.runId'),
          shard: JsonPath.stringAt('$$.Map.Item.Value.shard'),
          previous: JsonPath.objectAt('$$.Map.Item.Value'),
        },
        maxConcurrency: props.config.concurrency,
        resultPath,
      }).itemProcessor(
        new Choice(this, `${name}FailedBefore`, { stateName: `${name}FailedBefore?` })
          .when(
            Condition.isPresent('$.previous.failed'),
            new Pass(this, `${name}Skipped`, { outputPath: '$.previous' }),
          )
          .otherwise(modelTask(name, functions[stage], catchStates(name))),
      );
    };

    let judgeStages: Chain | MapState;
    if (!batchMode) {
      const judgeCatch = catchStates('Judge');
      judgeStages = shardMap('JudgeShards', '$.instructions.shards', '$.shardResults').itemProcessor(
        modelTask('Filter', functions.filter, judgeCatch)
          .next(modelTask('Respond', functions.respond, judgeCatch))
          .next(modelTask('Evaluate', functions.evaluate, judgeCatch)),
      );
    } else {
      const filter = batchSteps('filter', '$.instructions.shards');
      const respond = batchSteps('respond', '$.filterResults');
      const evaluate = batchSteps('evaluate', '$.respondResults');
      judgeStages = filter
        .next(
          shardMap('FilterShards', '$.instructions.shards', '$.filterResults').itemProcessor(
            modelTask('Filter', functions.filter, catchStates('Filter')),
          ),
        )
        .next(respond)
        .next(judgeMap('respond', '$.filterResults', '$.respondResults'))
        .next(evaluate)
        .next(judgeMap('evaluate', '$.respondResults', '$.shardResults'));
    }

    const merge = new LambdaInvoke(this, 'Merge', {
      lambdaFunction: functions.merge,
      payload: TaskInput.fromObject({
        runId: JsonPath.stringAt('$.runId'),
        induceResults: JsonPath.objectAt('$.induceResults'),
        shardResults: JsonPath.objectAt('$.shardResults'),
      }),
      outputPath: '$.Payload',
      taskTimeout: Timeout.duration(TASK_TIMEOUT),
    }).addRetry(storeRetry);

    // Tells whoever listens on the default bus that the run is done, with its key figures (the merge
    // handler adds `completion` to Merge's output); ResultPath null keeps Merge's output as the execution's.
    const runCompleted = EventBridgePutEvents.jsonPath(this, 'RunCompleted', {
      entries: [
        {
          source: RUN_COMPLETED.source,
          detailType: RUN_COMPLETED.detailType,
          detail: TaskInput.fromObject({
            runId: JsonPath.stringAt('$.runId'),
            executionId: JsonPath.stringAt('$$.Execution.Id'),
            status: JsonPath.stringAt('$.completion.status'),
            pairs: JsonPath.numberAt('$.pairs'),
            rejects: JsonPath.numberAt('$.rejects'),
            inputRecords: JsonPath.numberAt('$.completion.inputRecords'),
            failedShards: JsonPath.numberAt('$.completion.failedShards'),
            calls: JsonPath.numberAt('$.completion.calls'),
            costUsd: JsonPath.numberAt('$.completion.costUsd'),
            mode: JsonPath.stringAt('$.completion.mode'),
            reportKey: JsonPath.stringAt('$.reportKey'),
          }),
        },
      ],
      resultPath: JsonPath.DISCARD,
    })
      // A notice that cannot be sent fails the execution visibly; a redrive sends it without redoing the run.
      .addRetry({
        errors: ['States.ALL'],
        interval: Duration.seconds(2),
        backoffRate: 2,
        maxAttempts: 3,
        jitterStrategy: JitterType.FULL,
      });

    const duplicate = new Choice(this, 'DuplicateEvent', { stateName: 'DuplicateEvent?' })
      .when(Condition.booleanEquals('$.duplicate', true), new Succeed(this, 'AlreadyStarted'))
      .otherwise(
        (batchMode
          ? dedupTask('DedupTexts', 'text', '$.texts').next(batchSteps('induce', '$.texts.shards'))
          : dedupTask('DedupTexts', 'text', '$.texts')
        )
          .next(induceShards)
          .next(dedupTask('DedupInstructions', 'instruction', '$.instructions'))
          .next(judgeStages)
          .next(merge)
          .next(runCompleted),
      );

    this.logGroup = new LogGroup(this, 'Logs', {
      // The vendedlogs prefix keeps CloudWatch's log-delivery resource policy from growing per log group.
      logGroupName: `/aws/vendedlogs/states/${Names.uniqueResourceName(this, { maxLength: 200 })}`,
      retention: RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.stateMachine = new StateMachine(this, 'StateMachine', {
      stateMachineType: StateMachineType.STANDARD,
      definitionBody: DefinitionBody.fromChainable(split.next(duplicate)),
      logs: { destination: this.logGroup, level: LogLevel.ALL, includeExecutionData: false },
      tracingEnabled: true,
    });
  }
}
