import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App, type CfnElement } from 'aws-cdk-lib';
import { PipelineStack } from '../infra/pipeline-stack.js';
import type { PipelineConfig } from '../pipeline/config.js';
import { definitionOf, localFunctionArn } from './definition.js';

/** A Lambda function of the synthesized stack, as the local engine runs it. */
export interface LocalFunction {
  readonly logicalId: string;
  readonly stage: string;
  readonly env: Record<string, string>;
}

/** The synthesized pipeline: the state machine definition and its functions by local ARN. */
export interface SynthesizedPipeline {
  readonly definition: Record<string, unknown>;
  readonly functions: ReadonlyMap<string, LocalFunction>;
}

type Resource = { Type: string; Properties?: Record<string, unknown> };

/** Which of the stack's workflows to run. */
export type Workflow = 'pipeline' | 'tuning';

/**
 * Synthesizes the same stack `cdk deploy` deploys, in process and without bundling, and returns
 * the definition of one of its state machines (the pipeline by default) with tokens resolved to local
 * stand-ins, and the stack's functions.
 */
export function synthesizePipeline(
  config: PipelineConfig,
  workflow: Workflow = 'pipeline',
): SynthesizedPipeline {
  const outdir = mkdtempSync(join(tmpdir(), 'safer-instruct-synth-'));
  try {
    // The deploy path validates the template; the local run needs only the definition, fast.
    const app = new App({
      outdir,
      context: { 'aws:cdk:bundling-stacks': [] },
      builtinCloudFormationValidation: false,
      treeMetadata: false,
    });
    const stack = new PipelineStack(app, 'SaferInstruct', { config, allowLocalModels: true });
    const template = app.synth().getStackByName(stack.stackName).template as {
      Resources: Record<string, Resource>;
    };
    const functions = new Map<string, LocalFunction>();
    for (const [logicalId, resource] of Object.entries(template.Resources)) {
      if (resource.Type !== 'AWS::Lambda::Function') continue;
      const env = ((resource.Properties?.Environment as { Variables?: Record<string, unknown> } | undefined)
        ?.Variables ?? {}) as Record<string, unknown>;
      if (typeof env.STAGE !== 'string') continue;
      const plain = Object.fromEntries(
        Object.entries(env).filter(([, v]) => typeof v === 'string'),
      ) as Record<string, string>;
      functions.set(localFunctionArn(logicalId), { logicalId, stage: env.STAGE, env: plain });
    }
    const machine = workflow === 'pipeline' ? stack.pipeline.stateMachine : stack.tuning.stateMachine;
    const logicalId = stack.getLogicalId(machine.node.defaultChild as CfnElement);
    return { definition: definitionOf(template, logicalId), functions };
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}
