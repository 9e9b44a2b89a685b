import './polyfill.js';
import { StateMachine } from 'aws-local-stepfunctions';
import type { PipelineConfig } from '../pipeline/config.js';
import { LocalEngineError } from '../pipeline/errors.js';
import type { TuningDeps } from '../tuning/deps.js';
import { LOCAL_ENV } from './definition.js';
import { TUNING_HANDLERS } from './handlers.js';
import { synthesizePipeline } from './synth.js';

/** The parameters the definition gives CreateModelCustomizationJob, as a local double receives them. */
export type CustomizationRequest = Record<string, unknown>;

/** What a local ReverseTuning execution needs. */
export interface LocalTuningOptions {
  readonly config: PipelineConfig;
  readonly deps: TuningDeps;
  /**
   * Stands in for the Bedrock fine-tuning job (`CustomizeModel`, the `.sync` integration): gets the
   * job's parameters, returns what the finished job's description would, e.g. `{ JobArn, OutputModelArn }`.
   */
  readonly customize: (request: CustomizationRequest) => Promise<Record<string, unknown>>;
  /** The execution input, as EventBridge or a StartExecution call would give it. */
  readonly input: unknown;
  readonly executionName?: string;
}

type Json = Record<string, unknown>;

/**
 * Executes the deployed ReverseTuning definition on this machine: its Lambda steps run in process over
 * the given dependencies, its customization task runs the given double, and its waits take no time.
 * Returns the execution's output; a failed execution throws the error of the step that failed it.
 */
export async function executeTuningLocally(options: LocalTuningOptions): Promise<Json> {
  const { definition, functions } = synthesizePipeline(options.config, 'tuning');
  const handlers = new Map<string, (event: unknown) => Promise<unknown>>();
  for (const [arn, fn] of functions) {
    const module = TUNING_HANDLERS[fn.stage];
    if (module)
      handlers.set(
        arn,
        module.createHandler(() => options.deps),
      );
  }
  let failure: Error | undefined;
  const invokeLambda = async (request: unknown) => {
    const { FunctionName, Payload } = request as { FunctionName: string; Payload: unknown };
    const handler = handlers.get(FunctionName);
    if (!handler) throw new LocalEngineError(`the definition invokes an unknown function ${FunctionName}`);
    try {
      return { StatusCode: 200, Payload: await handler(Payload) } as never;
    } catch (error) {
      failure ??= error as Error;
      throw error;
    }
  };
  const states = definition.States as Record<string, Json>;
  const tasks = Object.entries(states).filter(([, s]) => s.Type === 'Task');
  const waits = Object.entries(states).filter(([, s]) => s.Type === 'Wait');
  const name = options.executionName ?? 'local-tuning';
  const machine = new StateMachine(definition as never, { validationOptions: { checkArn: false } });
  const execution = machine.run(options.input as never, {
    overrides: {
      taskResourceLocalHandlers: Object.fromEntries(
        tasks.map(([state, s]) => [
          state,
          String(s.Resource).includes(':lambda:invoke')
            ? invokeLambda
            : (request: unknown) => options.customize(request as CustomizationRequest) as never,
        ]),
      ),
      waitTimeOverrides: Object.fromEntries(waits.map(([state]) => [state, 0])),
    },
    context: {
      Execution: {
        Id: `arn:${LOCAL_ENV.partition}:states:${LOCAL_ENV.region}:${LOCAL_ENV.account}:execution:ReverseTuning:${name}`,
        Name: name,
        Input: options.input as never,
        StartTime: new Date().toISOString(),
      },
    },
  });
  return (await execution.result.catch((error: unknown) => {
    throw failure ?? error;
  })) as Json;
}
