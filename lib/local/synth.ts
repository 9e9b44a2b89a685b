import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
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

/**
 * Synthesizes the same stack `cdk deploy` deploys, in process and without bundling, and returns
 * its state machine definition with tokens resolved to local stand-ins.
 */
export function synthesizePipeline(config: PipelineConfig): SynthesizedPipeline {
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
    return { definition: definitionOf(template), functions };
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}
