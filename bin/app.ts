import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { applyNagAcknowledgements } from '../lib/infra/nag.js';
import { PipelineStack } from '../lib/infra/pipeline-stack.js';
import { loadConfigFile, type PipelineConfigInput, parseConfig } from '../lib/pipeline/config.js';

/** The context key naming the pipeline configuration file, relative to the working directory. */
const CONFIG_CONTEXT_KEY = 'safer-instruct:config';
const DEFAULT_BEDROCK_MODEL = 'bedrock:anthropic.claude-3-haiku-20240307-v1:0';
/** Without a config file the stack deploys with Bedrock models: the local default cannot run in Lambda. */
const DEFAULT_CONFIG: PipelineConfigInput = {
  models: {
    induce: DEFAULT_BEDROCK_MODEL,
    filter: DEFAULT_BEDROCK_MODEL,
    respond: DEFAULT_BEDROCK_MODEL,
    evaluate: DEFAULT_BEDROCK_MODEL,
  },
};

const app = new App();
const configPath = resolve(
  String(app.node.tryGetContext(CONFIG_CONTEXT_KEY) ?? 'safer-instruct.config.json'),
);
const config = existsSync(configPath)
  ? parseConfig(await loadConfigFile(configPath), `config ${configPath}`)
  : parseConfig(DEFAULT_CONFIG);

const stack = new PipelineStack(app, 'SaferInstruct', {
  config,
  description: 'Safer-Instruct: builds preference datasets (prompt, chosen, rejected) from uploaded texts',
});
applyNagAcknowledgements(stack);
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
