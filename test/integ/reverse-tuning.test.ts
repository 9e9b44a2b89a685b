import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  BedrockClient,
  CreateCustomModelDeploymentCommand,
  GetCustomModelDeploymentCommand,
  GetModelCustomizationJobCommand,
} from '@aws-sdk/client-bedrock';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { runLocal } from '../../lib/local/run-local.js';
import { type CustomizationRequest, executeTuningLocally } from '../../lib/local/run-tuning.js';
import { parseConfig } from '../../lib/pipeline/config.js';
import { StoreParameterStore } from '../../lib/pipeline/parameters.js';
import { REVERSED_PREAMBLE, reversedPrompt } from '../../lib/pipeline/prompts/induction.js';
import { normalizeText } from '../../lib/pipeline/records.js';
import type { Pair } from '../../lib/pipeline/schemas.js';
import { FsStore } from '../../lib/pipeline/store/fs-store.js';
import { formatRecord } from '../../lib/reverse/formats.js';
import type { TuningDeps } from '../../lib/tuning/deps.js';
import { TuningManifest, tuningManifestKey } from '../../lib/tuning/schemas.js';
import { FakeModel } from '../support/fake-model.js';
import { readJsonlFile, tempDir } from '../support/temp.js';

const PARAMETER = '/SaferInstruct/induce-model';
const TRAINING_KEY = 'tuning/incoming/reversed.jsonl';
const CUSTOM_MODEL =
  'arn:aws:bedrock:local-1:000000000000:custom-model/amazon.nova-micro-v1:0:128k/abc123def456';
const DEPLOYMENT = 'arn:aws:bedrock:local-1:000000000000:custom-model-deployment/a1b2c3d4e5f6';
const fixture = new URL('../fixtures/records-60.jsonl', import.meta.url).pathname;

const config = parseConfig({
  models: {
    induce: `ssm:${PARAMETER}`,
    filter: 'bedrock:judge',
    respond: 'bedrock:judge',
    evaluate: 'bedrock:judge',
  },
  shardSize: 20,
  tuning: { hyperParameters: { epochCount: 2 } },
});

const trainingData = () =>
  [
    {
      response: 'Water boils at 100 degrees Celsius at sea level.',
      instruction: 'At what temperature does water boil?',
    },
    {
      response: 'Sleep seven to nine hours and keep a regular bedtime.',
      instruction: 'How can I sleep better?',
    },
  ]
    .map((pair) => JSON.stringify(formatRecord('nova', pair)))
    .join('\n');

const uploadEvent = (key: string) => ({
  'detail-type': 'Object Created',
  source: 'aws.s3',
  detail: { bucket: { name: 'local-bucket' }, object: { key, etag: 'etag-1' } },
});

const bedrock = mockClient(BedrockClient);
afterEach(() => bedrock.reset());

/** A store with reversed training data uploaded, and the steps' dependencies over it. */
async function uploaded() {
  const store = new FsStore(tempDir());
  await store.put(TRAINING_KEY, trainingData());
  const client = new BedrockClient({ region: 'local-1' });
  const deps: TuningDeps = {
    store,
    parameters: new StoreParameterStore(store),
    bedrock: () => client,
    now: () => new Date('2026-11-30T00:00:00Z'),
  };
  // Bedrock's side of the double: each job by name, as GetModelCustomizationJob would describe it.
  const jobs: CustomizationRequest[] = [];
  const byName = new Map<string, { jobArn: string; outputModelArn: string; status: string }>();
  bedrock.on(GetModelCustomizationJobCommand).callsFake((input: { jobIdentifier: string }) => {
    const job = byName.get(input.jobIdentifier);
    if (!job) throw Object.assign(new Error('not found'), { name: 'ResourceNotFoundException' });
    return job;
  });
  const customize = async (request: CustomizationRequest) => {
    jobs.push(request);
    const job = {
      jobArn: `arn:aws:bedrock:local-1:000000000000:model-customization-job/${request.JobName}`,
      outputModelArn: `${CUSTOM_MODEL}-${jobs.length}`,
      status: 'Completed',
    };
    byName.set(String(request.JobName), job);
    return { JobArn: job.jobArn, OutputModelArn: job.outputModelArn };
  };
  return { store, deps, jobs, customize };
}

describe('ReverseTuning on the local engine', () => {
  it('runs the customization job on the upload, waits for the deployment and records its ARN', async () => {
    // Prepare
    const { store, deps, jobs, customize } = await uploaded();
    bedrock.on(CreateCustomModelDeploymentCommand).resolves({ customModelDeploymentArn: DEPLOYMENT });
    bedrock
      .on(GetCustomModelDeploymentCommand)
      .resolvesOnce({ status: 'Creating' } as never)
      .resolves({ status: 'Active' } as never);

    // Act
    const output = await executeTuningLocally({ config, deps, customize, input: uploadEvent(TRAINING_KEY) });

    // Assess
    expect(jobs).toHaveLength(1);
    expect(jobs[0]).toMatchObject({
      BaseModelIdentifier: 'amazon.nova-micro-v1:0:128k',
      CustomizationType: 'FINE_TUNING',
      HyperParameters: { epochCount: '2' },
      TrainingDataConfig: { S3Uri: `s3://Bucket83908E77/${TRAINING_KEY}` },
    });
    expect(jobs[0]?.CustomModelName).toBe(jobs[0]?.JobName);
    const manifest = TuningManifest.parse(output);
    expect(manifest).toMatchObject({
      customModelArn: `${CUSTOM_MODEL}-1`,
      serving: 'deployment',
      servingArn: DEPLOYMENT,
      modelSpec: `bedrock:${DEPLOYMENT}`,
      format: 'nova',
      records: 2,
      parameterName: PARAMETER,
    });
    expect(await deps.parameters.get(PARAMETER)).toBe(`bedrock:${DEPLOYMENT}`);
    expect(JSON.parse(await store.get(tuningManifestKey(manifest.jobName)))).toEqual(manifest);
    expect(bedrock.commandCalls(CreateCustomModelDeploymentCommand)).toHaveLength(1);
    expect(bedrock.commandCalls(CreateCustomModelDeploymentCommand)[0]?.args[0].input).toMatchObject({
      modelArn: `${CUSTOM_MODEL}-1`,
      modelDeploymentName: manifest.jobName,
      clientRequestToken: jobs[0]?.ClientRequestToken,
    });
    expect(bedrock.commandCalls(GetCustomModelDeploymentCommand)).toHaveLength(2);
  });

  it('induces with the recorded model and its reversed training prompt in the next pipeline run', async () => {
    // Prepare
    const { store, deps, customize } = await uploaded();
    bedrock.on(CreateCustomModelDeploymentCommand).resolves({ customModelDeploymentArn: DEPLOYMENT });
    bedrock.on(GetCustomModelDeploymentCommand).resolves({ status: 'Active' } as never);
    await executeTuningLocally({ config, deps, customize, input: uploadEvent(TRAINING_KEY) });
    const tuned = new FakeModel(`bedrock:${DEPLOYMENT}`);
    const judge = new FakeModel('bedrock:judge');
    const asked: string[] = [];
    const registry = {
      get: async (spec: string) => {
        asked.push(spec);
        return spec === tuned.spec ? tuned : judge;
      },
    };
    const outDir = tempDir();

    // Act
    await runLocal({
      input: fixture,
      outDir,
      config,
      registry,
      parameters: deps.parameters,
      retryIntervalMs: 0,
    });

    // Assess
    expect(asked).not.toContain(`ssm:${PARAMETER}`);
    expect(tuned.calls.length).toBeGreaterThan(0);
    for (const call of tuned.calls) {
      expect(call.request.system).toBe('');
      expect(call.request.prompt.startsWith(`${REVERSED_PREAMBLE}\n\n### Response:\n`)).toBe(true);
      expect(call.request.prompt).not.toContain('<response>');
    }
    const firstText = normalizeText(JSON.parse(readFileSync(fixture, 'utf8').split('\n')[0] ?? '{}').text);
    expect(tuned.calls.map((c) => c.request.prompt)).toContain(reversedPrompt(firstText));
    const pairs = readJsonlFile<Pair>(join(outDir, 'pairs.jsonl'));
    expect(pairs.length).toBeGreaterThan(0);
    for (const pair of pairs) expect(pair.metadata.stages.induce?.model).toBe(`bedrock:${DEPLOYMENT}`);
    const report = JSON.parse(readFileSync(join(outDir, 'report.json'), 'utf8'));
    expect(report.models.induce).toBe(`bedrock:${DEPLOYMENT}`);
    expect(await store.tryGet('parameters/SaferInstruct/induce-model')).toBe(`bedrock:${DEPLOYMENT}`);
  });

  it('does not pay for the same tuning twice: a second upload of the same data records its model again', async () => {
    // Prepare
    const { deps, jobs, customize } = await uploaded();
    bedrock.on(CreateCustomModelDeploymentCommand).resolves({ customModelDeploymentArn: DEPLOYMENT });
    bedrock.on(GetCustomModelDeploymentCommand).resolves({ status: 'Active' } as never);
    const first = await executeTuningLocally({ config, deps, customize, input: uploadEvent(TRAINING_KEY) });

    // Act
    const again = await executeTuningLocally({
      config,
      deps,
      customize,
      input: uploadEvent(TRAINING_KEY),
      executionName: 'again',
    });

    // Assess
    expect(jobs).toHaveLength(1);
    expect(TuningManifest.parse(again)).toMatchObject({
      jobName: TuningManifest.parse(first).jobName,
      servingArn: DEPLOYMENT,
      records: 2,
    });
    expect(bedrock.commandCalls(CreateCustomModelDeploymentCommand)).toHaveLength(1);
  });

  it('serves and records a finished job on a rerun after serving failed, without training or deploying again', async () => {
    // Prepare
    const { deps, jobs, customize } = await uploaded();
    const quota = Object.assign(new Error('deployment quota reached'), {
      name: 'ServiceQuotaExceededException',
    });
    bedrock
      .on(CreateCustomModelDeploymentCommand)
      .resolvesOnce({ customModelDeploymentArn: DEPLOYMENT })
      .resolves({ customModelDeploymentArn: 'a-second-deployment' });
    bedrock
      .on(GetCustomModelDeploymentCommand)
      .rejectsOnce(quota)
      .resolves({ status: 'Active' } as never);
    const failed = await executeTuningLocally({
      config,
      deps,
      customize,
      input: uploadEvent(TRAINING_KEY),
    }).catch((error: Error) => error);

    // Act
    const output = await executeTuningLocally({
      config,
      deps,
      customize,
      input: uploadEvent(TRAINING_KEY),
      executionName: 'rerun',
    });

    // Assess
    expect(failed).toMatchObject({ name: 'ServiceQuotaExceededException' });
    expect(jobs).toHaveLength(1);
    expect(bedrock.commandCalls(CreateCustomModelDeploymentCommand)).toHaveLength(1);
    expect(TuningManifest.parse(output)).toMatchObject({
      servingArn: DEPLOYMENT,
      modelSpec: `bedrock:${DEPLOYMENT}`,
    });
    expect(await deps.parameters.get(PARAMETER)).toBe(`bedrock:${DEPLOYMENT}`);
  });

  it('points the parameter back at a model tuned before when its data is uploaded again', async () => {
    // Prepare
    const { store, deps, jobs, customize } = await uploaded();
    let deployments = 0;
    bedrock
      .on(CreateCustomModelDeploymentCommand)
      .callsFake(() => ({ customModelDeploymentArn: `${DEPLOYMENT}${++deployments}` }));
    bedrock.on(GetCustomModelDeploymentCommand).resolves({ status: 'Active' } as never);
    const otherKey = 'tuning/incoming/other.jsonl';
    await store.put(otherKey, trainingData().split('\n')[0] ?? '');
    await executeTuningLocally({ config, deps, customize, input: uploadEvent(TRAINING_KEY) });
    await executeTuningLocally({ config, deps, customize, input: uploadEvent(otherKey), executionName: 'b' });

    // Act
    await executeTuningLocally({
      config,
      deps,
      customize,
      input: uploadEvent(TRAINING_KEY),
      executionName: 'a-again',
    });

    // Assess
    expect(jobs).toHaveLength(2);
    expect(await deps.parameters.get(PARAMETER)).toBe(`bedrock:${DEPLOYMENT}1`);
  });

  it('stops before any job when a training line is not in the base model format, naming key and line', async () => {
    // Prepare
    const { store, deps, jobs, customize } = await uploaded();
    await store.put(TRAINING_KEY, `${trainingData()}\n{"prompt": "a", "completion": "b"}\n`);

    // Act
    const run = executeTuningLocally({ config, deps, customize, input: uploadEvent(TRAINING_KEY) });

    // Assess
    await expect(run).rejects.toThrow(/tuning\/incoming\/reversed\.jsonl line 3: not a nova record/);
    await expect(run).rejects.toMatchObject({ name: 'TrainingDataError' });
    expect(jobs).toHaveLength(0);
  });
});
