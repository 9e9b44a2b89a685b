import {
  BedrockClient,
  CreateProvisionedModelThroughputCommand,
  GetCustomModelDeploymentCommand,
  GetModelCustomizationJobCommand,
  GetProvisionedModelThroughputCommand,
} from '@aws-sdk/client-bedrock';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../../lib/pipeline/config.js';
import { StoreParameterStore } from '../../lib/pipeline/parameters.js';
import {
  DEFAULT_INDUCTION_EXAMPLES,
  fewShotTemplate,
  inductionTemplate,
  isTunedSpec,
  REVERSED_TEMPLATE,
} from '../../lib/pipeline/prompts/induction.js';
import { BUILT_IN_TEMPLATES, templateHash } from '../../lib/pipeline/prompts/templates.js';
import { pinModels } from '../../lib/pipeline/stages/split.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import type { TuningDeps } from '../../lib/tuning/deps.js';
import { prepareTuning, servingFor } from '../../lib/tuning/prepare.js';
import { recordModel, tunedModelSpec } from '../../lib/tuning/record.js';
import type { PreparedTuning } from '../../lib/tuning/schemas.js';
import { serveModel } from '../../lib/tuning/serve.js';
import { tempDir } from '../support/temp.js';

const CUSTOM =
  'arn:aws:bedrock:us-west-2:123456789012:custom-model/meta.llama3-1-8b-instruct-v1:0:128k/abc123';
const PROVISIONED = 'arn:aws:bedrock:us-west-2:123456789012:provisioned-model/xyz789';

const bedrock = mockClient(BedrockClient);
const notFound = Object.assign(new Error('no such job'), { name: 'ResourceNotFoundException' });
beforeEach(() => bedrock.on(GetModelCustomizationJobCommand).rejects(notFound));
afterEach(() => bedrock.reset());

function depsOver(store = new FsStore(tempDir())): TuningDeps {
  const client = new BedrockClient({ region: 'us-west-2' });
  return { store, parameters: new StoreParameterStore(store), bedrock: () => client };
}

const prepared = (overrides: Partial<PreparedTuning> = {}): PreparedTuning => ({
  done: false,
  trained: false,
  key: 'tuning/incoming/data.jsonl',
  etag: 'e1',
  records: 3,
  format: 'prompt-completion',
  baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k',
  hyperParameters: {},
  jobName: 'safer-instruct-0123456789abcdef0123',
  token: '0123456789abcdef0123',
  trainingUri: 's3://b/tuning/incoming/data.jsonl',
  outputUri: 's3://b/tuning/output/safer-instruct-0123456789abcdef0123/',
  serving: 'provisioned',
  modelUnits: 2,
  parameterName: '/SaferInstruct/induce-model',
  ...overrides,
});

describe('induction prompts', () => {
  it('keeps the built-in few-shot template byte for byte, so earlier cached answers stay valid', () => {
    // Prepare
    const template = fewShotTemplate();

    // Act
    const hash = templateHash(template);

    // Assess
    expect(template.version).toBe('induce-v1');
    expect(hash).toBe(templateHash(BUILT_IN_TEMPLATES.induce));
    // The hash of induce-v1 before few-shot examples became configuration.
    expect(hash).toBe('b12f66a975c5');
  });

  it('tells tuned model specs from general ones', () => {
    expect(isTunedSpec('bedrock-custom:arn:aws:bedrock:us-east-1:123456789012:imported-model/x#llama')).toBe(
      true,
    );
    expect(isTunedSpec('sagemaker:my-endpoint')).toBe(true);
    expect(isTunedSpec(`bedrock:${PROVISIONED}`)).toBe(true);
    expect(isTunedSpec('bedrock:arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/a1b2c3')).toBe(
      true,
    );
    expect(isTunedSpec('bedrock:anthropic.claude-3-haiku-20240307-v1:0')).toBe(false);
    expect(isTunedSpec('bedrock:arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.x')).toBe(false);
    expect(isTunedSpec('openai:http://localhost:8000/v1#qwen')).toBe(false);
  });

  it('asks a tuned model with its training prompt and a general one with the configured examples', () => {
    // Prepare
    const examples = [
      { response: 'Blue and yellow make green.', instruction: 'Which two colours make green?' },
    ];

    // Act
    const tuned = inductionTemplate({ prompt: 'auto' }, `bedrock:${PROVISIONED}`);
    const fewShot = inductionTemplate(
      { prompt: 'auto', examples },
      'bedrock:anthropic.claude-3-haiku-20240307-v1:0',
    );
    const forced = inductionTemplate({ prompt: 'few-shot' }, `bedrock:${PROVISIONED}`);

    // Assess
    expect(tuned).toBe(REVERSED_TEMPLATE);
    expect(tuned.system).toBe('');
    expect(fewShot.version).toBe('induce-few-shot');
    expect(fewShot.user).toContain(
      '<response>Blue and yellow make green.</response>\n### Instruction:\nWhich two',
    );
    expect(fewShot.user).not.toContain(DEFAULT_INDUCTION_EXAMPLES[0]?.response);
    expect(forced.version).toBe('induce-v1');
  });
});

describe('ReverseTuning steps', () => {
  it('names the job after the data, base model and hyperparameters, and picks the base model format', async () => {
    // Prepare
    const deps = depsOver();
    await deps.store.put(
      'tuning/incoming/data.jsonl',
      '{"prompt":"p","completion":"c"}\n\n{"prompt":"q","completion":"d"}\n',
    );
    const input = (hyperParameters: Record<string, number>) => ({
      event: { inputKey: 'tuning/incoming/data.jsonl' },
      bucket: 'b',
      tuning: { baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k', hyperParameters },
      parameterName: '/p',
    });

    // Act
    const first = await prepareTuning(input({ epochCount: 2 }), deps);
    const same = await prepareTuning(input({ epochCount: 2 }), deps);
    const other = await prepareTuning(input({ epochCount: 3 }), deps);

    // Assess
    expect(first).toMatchObject({ done: false, records: 2, format: 'prompt-completion', serving: 'none' });
    expect(first.hyperParameters).toEqual({ epochCount: '2' });
    expect(first.jobName).toMatch(/^safer-instruct-[0-9a-f]{20}$/);
    expect(same.jobName).toBe(first.jobName);
    expect(other.jobName).not.toBe(first.jobName);
    expect(first.trainingUri).toBe('s3://b/tuning/incoming/data.jsonl');
    expect(first.outputUri).toBe(`s3://b/tuning/output/${first.jobName}/`);
  });

  it('names the same tuning the same whatever the order of its hyperparameters, and apart per bucket', async () => {
    // Prepare
    const deps = depsOver();
    await deps.store.put('tuning/incoming/data.jsonl', '{"prompt":"p","completion":"c"}\n');
    const input = (bucket: string, hyperParameters: Record<string, number>) => ({
      event: { inputKey: 'tuning/incoming/data.jsonl' },
      bucket,
      tuning: { baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k', hyperParameters },
      parameterName: '/p',
    });

    // Act
    const first = await prepareTuning(input('b', { epochCount: 2, learningRate: 1 }), deps);
    const reordered = await prepareTuning(input('b', { learningRate: 1, epochCount: 2 }), deps);
    const otherBucket = await prepareTuning(input('c', { epochCount: 2, learningRate: 1 }), deps);

    // Assess
    expect(reordered.jobName).toBe(first.jobName);
    expect(otherBucket.jobName).not.toBe(first.jobName);
  });

  it('serves a job that completed before without training again, and retries a failed one under a new name', async () => {
    // Prepare
    const deps = depsOver();
    await deps.store.put('tuning/incoming/data.jsonl', '{"prompt":"p","completion":"c"}\n');
    const input = {
      event: { inputKey: 'tuning/incoming/data.jsonl' },
      bucket: 'b',
      tuning: {},
      parameterName: '/p',
    };
    const fresh = await prepareTuning(
      { ...input, tuning: { baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k' } },
      deps,
    );
    bedrock.on(GetModelCustomizationJobCommand, { jobIdentifier: fresh.jobName }).resolves({
      status: 'Completed',
      jobArn: 'job-1',
      outputModelArn: CUSTOM,
    } as never);

    // Act
    const trained = await prepareTuning(
      { ...input, tuning: { baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k' } },
      deps,
    );
    bedrock
      .on(GetModelCustomizationJobCommand, { jobIdentifier: fresh.jobName })
      .resolves({ status: 'Failed' } as never);
    const retried = await prepareTuning(
      { ...input, tuning: { baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k' } },
      deps,
    );
    bedrock
      .on(GetModelCustomizationJobCommand, { jobIdentifier: fresh.jobName })
      .resolves({ status: 'InProgress' } as never);
    const running = prepareTuning(
      { ...input, tuning: { baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k' } },
      deps,
    );

    // Assess
    expect(fresh).toMatchObject({ done: false, trained: false });
    expect(trained).toMatchObject({
      done: false,
      trained: true,
      job: { JobArn: 'job-1', OutputModelArn: CUSTOM },
    });
    expect(retried).toMatchObject({
      done: false,
      trained: false,
      jobName: `${fresh.jobName}-2`,
      token: `${fresh.token}-2`,
    });
    await expect(running).rejects.toMatchObject({ name: 'TuningInProgressError' });
  });

  it('finds an upload whose event key arrives URL-encoded', async () => {
    // Prepare
    const deps = depsOver();
    await deps.store.put(
      'tuning/incoming/my data 100%.jsonl',
      '{"schemaVersion":"bedrock-conversation-2024","messages":[{"role":"user","content":[{"text":"a"}]},{"role":"assistant","content":[{"text":"b"}]}]}\n',
    );
    const event = {
      'detail-type': 'Object Created' as const,
      detail: { bucket: { name: 'b' }, object: { key: 'tuning/incoming/my+data+100%25.jsonl' } },
    };

    // Act
    const prepared = await prepareTuning(
      { event, bucket: 'b', tuning: {}, parameterName: '/p' },
      depsOver(deps.store as FsStore),
    );

    // Assess
    expect(prepared.key).toBe('tuning/incoming/my data 100%.jsonl');
    expect(prepared.records).toBe(1);
  });

  it('refuses training data outside tuning/incoming/ and a configuration it cannot read', async () => {
    // Prepare
    const deps = depsOver();
    await deps.store.put('incoming/data.jsonl', '{"prompt":"p","completion":"c"}\n');

    // Act
    const outside = await prepareTuning(
      { event: { inputKey: 'incoming/data.jsonl' }, bucket: 'b', tuning: {}, parameterName: '/p' },
      deps,
    ).catch((error: Error) => error);
    const badConfig = await prepareTuning(
      {
        event: { inputKey: 'tuning/incoming/x.jsonl' },
        bucket: 'b',
        tuning: { serving: 'hourly' },
        parameterName: '/p',
      },
      deps,
    ).catch((error: Error) => error);

    // Assess
    expect(outside).toMatchObject({ name: 'InputError' });
    expect(badConfig).toMatchObject({ name: 'ConfigError' });
  });

  it('serves Nova through a per-token deployment by default, and bills nothing by the hour unless asked', () => {
    const tuning = (t: object) => parseConfig({ tuning: t }).tuning;
    expect(servingFor(tuning({}))).toBe('deployment');
    expect(servingFor(tuning({ baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k' }))).toBe('none');
    expect(
      servingFor(tuning({ baseModel: 'meta.llama3-1-8b-instruct-v1:0:128k', serving: 'provisioned' })),
    ).toBe('provisioned');
  });

  it('creates provisioned throughput once with the tuning token, then polls it until it is in service', async () => {
    // Prepare
    const deps = depsOver();
    bedrock.on(CreateProvisionedModelThroughputCommand).resolves({ provisionedModelArn: PROVISIONED });
    bedrock
      .on(GetProvisionedModelThroughputCommand)
      .resolvesOnce({ status: 'Creating' } as never)
      .resolves({ status: 'InService' } as never);

    // Act
    const first = await serveModel({ prepared: prepared(), job: { OutputModelArn: CUSTOM } }, deps);
    const second = await serveModel(
      { prepared: prepared(), job: { OutputModelArn: CUSTOM }, served: first },
      deps,
    );

    // Assess
    expect(first).toEqual({ status: 'creating', customModelArn: CUSTOM, servingArn: PROVISIONED, polls: 1 });
    expect(second).toEqual({
      status: 'ready',
      customModelArn: CUSTOM,
      servingArn: PROVISIONED,
      invokeArn: PROVISIONED,
    });
    expect(bedrock.commandCalls(CreateProvisionedModelThroughputCommand)).toHaveLength(1);
    expect(bedrock.commandCalls(CreateProvisionedModelThroughputCommand)[0]?.args[0].input).toEqual({
      provisionedModelName: prepared().jobName,
      modelId: CUSTOM,
      modelUnits: 2,
      clientRequestToken: prepared().token,
    });
  });

  it('records what it created at once, so a later execution polls it instead of creating a second one', async () => {
    // Prepare
    const deps = depsOver();
    bedrock.on(CreateProvisionedModelThroughputCommand).resolves({ provisionedModelArn: PROVISIONED });
    bedrock.on(GetProvisionedModelThroughputCommand).resolves({ status: 'Creating' } as never);
    await serveModel({ prepared: prepared(), job: { OutputModelArn: CUSTOM } }, deps);

    // Act
    const again = await serveModel({ prepared: prepared(), job: { OutputModelArn: CUSTOM } }, deps);

    // Assess
    expect(again).toMatchObject({ status: 'creating', servingArn: PROVISIONED, polls: 1 });
    expect(bedrock.commandCalls(CreateProvisionedModelThroughputCommand)).toHaveLength(1);
    expect(await deps.store.get(`tuning/manifests/${prepared().jobName}.serving.json`)).toBe(PROVISIONED);
  });

  it('gives up on serving still being created after six hours of polls, naming what is left', async () => {
    // Prepare
    const deps = depsOver();
    bedrock.on(GetProvisionedModelThroughputCommand).resolves({ status: 'Creating' } as never);
    const served = {
      status: 'creating' as const,
      customModelArn: CUSTOM,
      servingArn: PROVISIONED,
      polls: 360,
    };

    // Act
    const act = serveModel({ prepared: prepared(), served }, deps);

    // Assess
    await expect(act).rejects.toMatchObject({
      name: 'ServingFailedError',
      message: expect.stringContaining(PROVISIONED),
    });
  });

  it('fails a deployment Bedrock reports failed, and retries a Bedrock outage as transient', async () => {
    // Prepare
    const deps = depsOver();
    const nova = prepared({
      serving: 'deployment',
      baseModel: 'amazon.nova-micro-v1:0:128k',
      format: 'nova',
    });
    bedrock
      .on(GetCustomModelDeploymentCommand)
      .resolves({ status: 'Failed', failureMessage: 'bad model' } as never);
    const served = { status: 'creating' as const, customModelArn: CUSTOM, servingArn: 'deployment-arn' };
    const outage = Object.assign(new Error('down'), { name: 'ServiceUnavailableException' });

    // Act
    const failed = await serveModel({ prepared: nova, served }, deps).catch((error: Error) => error);
    bedrock.on(GetCustomModelDeploymentCommand).rejects(outage);
    const unavailable = await serveModel({ prepared: nova, served }, deps).catch((error: Error) => error);

    // Assess
    expect(failed).toMatchObject({
      name: 'ServingFailedError',
      message: expect.stringContaining('bad model'),
    });
    expect(unavailable).toMatchObject({ name: 'ModelTransientError' });
  });

  it('fails serving with a named error when Bedrock reports the throughput failed', async () => {
    // Prepare
    const deps = depsOver();
    bedrock
      .on(GetProvisionedModelThroughputCommand)
      .resolves({ status: 'Failed', failureMessage: 'quota' } as never);
    const served = { status: 'creating' as const, customModelArn: CUSTOM, servingArn: PROVISIONED };

    // Act
    const act = serveModel({ prepared: prepared(), served }, deps);

    // Assess
    await expect(act).rejects.toMatchObject({
      name: 'ServingFailedError',
      message: expect.stringContaining('quota'),
    });
  });

  it('asks Bedrock for the output model when the task result lacks it, and serves nothing when told so', async () => {
    // Prepare
    const deps = depsOver();
    bedrock
      .on(GetModelCustomizationJobCommand)
      .resolves({ outputModelArn: CUSTOM, status: 'Completed' } as never);

    // Act
    const served = await serveModel(
      { prepared: prepared({ serving: 'none' }), job: { jobArn: 'job-arn' } },
      deps,
    );

    // Assess
    expect(served).toEqual({ status: 'ready', customModelArn: CUSTOM, invokeArn: CUSTOM, jobArn: 'job-arn' });
    expect(bedrock.commandCalls(CreateProvisionedModelThroughputCommand)).toHaveLength(0);
  });

  it('records a prompt/completion model for InvokeModel and a conversation model for Converse', async () => {
    // Prepare
    const deps = depsOver();
    const served = {
      status: 'ready' as const,
      customModelArn: CUSTOM,
      servingArn: PROVISIONED,
      invokeArn: PROVISIONED,
    };

    // Act
    const manifest = await recordModel({ prepared: prepared(), served }, deps);

    // Assess
    expect(manifest.modelSpec).toBe(`bedrock-custom:${PROVISIONED}#llama`);
    expect(await deps.parameters.get('/SaferInstruct/induce-model')).toBe(manifest.modelSpec);
    expect(tunedModelSpec('amazon.nova-micro-v1:0:128k', 'nova', PROVISIONED)).toBe(`bedrock:${PROVISIONED}`);
    expect(tunedModelSpec('amazon.titan-text-express-v1:0:8k', 'prompt-completion', 'x')).toBe(
      'bedrock-custom:x#titan',
    );
  });
});

describe('ssm: model specs', () => {
  it('pins the model a parameter names into the run with its limits and prices, and says which parameter is missing', async () => {
    // Prepare
    const store = new FsStore(tempDir());
    const parameters = new StoreParameterStore(store);
    const config = parseConfig({
      models: {
        induce: 'ssm:/SaferInstruct/induce-model',
        filter: 'bedrock:j',
        respond: 'bedrock:j',
        evaluate: 'bedrock:j',
      },
      limits: { 'ssm:/SaferInstruct/induce-model': { requestsPerMinute: 60 } },
      prices: { 'ssm:/SaferInstruct/induce-model': { inputPer1k: 0.001, outputPer1k: 0.002 } },
    });

    // Act
    const missing = await pinModels(config, parameters).catch((error: Error) => error);
    await parameters.put('/SaferInstruct/induce-model', `bedrock:${PROVISIONED}`);
    const pinned = await pinModels(config, parameters);

    // Assess
    expect(missing).toMatchObject({
      name: 'ModelConfigError',
      message: expect.stringMatching(/parameter \/SaferInstruct\/induce-model does not exist/),
    });
    expect(pinned.limits[`bedrock:${PROVISIONED}`]).toEqual({ requestsPerMinute: 60 });
    expect(pinned.prices[PROVISIONED]).toEqual({ inputPer1k: 0.001, outputPer1k: 0.002 });
    expect(pinned.models).toEqual({
      induce: `bedrock:${PROVISIONED}`,
      filter: 'bedrock:j',
      respond: 'bedrock:j',
      evaluate: 'bedrock:j',
    });
  });
});
