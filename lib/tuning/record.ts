import { ConfigError } from '../pipeline/errors.js';
import type { TuningDeps } from './deps.js';
import { type RecordModelInput, type TuningManifest, tuningManifestKey } from './schemas.js';

/**
 * The spec induction calls a tuned model with: a model trained on prompt/completion pairs takes the raw
 * reversed prompt through InvokeModel (`bedrock-custom:`, with its family's body); a model trained on
 * conversations takes it as the user turn through Converse (`bedrock:`).
 */
export function tunedModelSpec(baseModel: string, format: string, invokeArn: string): string {
  if (format !== 'prompt-completion') return `bedrock:${invokeArn}`;
  const family = ['llama', 'titan', 'cohere', 'mistral'].find((f) => baseModel.includes(f));
  if (!family) throw new ConfigError(`cannot tell the InvokeModel body of a model tuned from ${baseModel}`);
  return `bedrock-custom:${invokeArn}#${family}`;
}

/**
 * ReverseTuning's last step: writes the tuning's manifest to the bucket, then points the SSM parameter
 * at the tuned model, so a pipeline configured with `models.induce: "ssm:<parameter>"` uses it from its
 * next run on. A model served `none` cannot be invoked as it is: its manifest is written, the parameter
 * is left alone. An upload of data tuned before records it again, so the parameter points back at it.
 */
export async function recordModel(input: RecordModelInput, deps: TuningDeps): Promise<TuningManifest> {
  const { prepared, served } = input;
  const invokeArn = served.invokeArn ?? served.customModelArn;
  const invokable = prepared.serving !== 'none';
  const manifest: TuningManifest = {
    jobName: prepared.jobName,
    ...(served.jobArn ? { jobArn: served.jobArn } : {}),
    baseModel: prepared.baseModel,
    format: prepared.format,
    hyperParameters: prepared.hyperParameters,
    trainingKey: prepared.key,
    trainingEtag: prepared.etag,
    records: prepared.records,
    customModelArn: served.customModelArn,
    serving: prepared.serving,
    ...(served.servingArn ? { servingArn: served.servingArn } : {}),
    modelSpec: tunedModelSpec(prepared.baseModel, prepared.format, invokeArn),
    parameterName: prepared.parameterName,
    parameterWritten: invokable,
    recordedAt: (deps.now?.() ?? new Date()).toISOString(),
  };
  await deps.store.put(tuningManifestKey(prepared.jobName), JSON.stringify(manifest, null, 2));
  if (invokable)
    await deps.parameters.put(
      prepared.parameterName,
      manifest.modelSpec,
      `safer-instruct induction model, tuned by ${prepared.jobName}`,
    );
  return manifest;
}
