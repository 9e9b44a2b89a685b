import { ModelConfigError } from '../errors.js';
import type { ParameterStore } from '../parameters.js';
import type { ModelClient } from './model-client.js';

/** Options shared by the providers a registry builds. */
export interface RegistryOptions {
  /** Where downloaded local models are kept; default `~/.cache/safer-instruct/models`. */
  readonly cacheDir?: string;
  /** Where `ssm:` specs are read; without it they cannot be used. */
  readonly parameters?: ParameterStore;
}

/** The request bodies InvokeModel takes for a raw prompt, by model family. */
export const INVOKE_BODIES = ['llama', 'titan', 'cohere', 'mistral', 'completion'] as const;
/** One of INVOKE_BODIES. */
export type InvokeBody = (typeof INVOKE_BODIES)[number];

/** The payloads a SageMaker endpoint takes: TGI/vLLM-style `inputs`, or OpenAI-style `messages`. */
export const SAGEMAKER_PAYLOADS = ['tgi', 'messages'] as const;
/** One of SAGEMAKER_PAYLOADS. */
export type SageMakerPayload = (typeof SAGEMAKER_PAYLOADS)[number];

/** A parsed model spec. */
export type ParsedSpec =
  | { readonly provider: 'bedrock'; readonly modelId: string }
  | { readonly provider: 'bedrock-custom'; readonly modelId: string; readonly body: InvokeBody }
  | { readonly provider: 'sagemaker'; readonly endpoint: string; readonly payload: SageMakerPayload }
  | { readonly provider: 'openai'; readonly baseURL: string; readonly model: string }
  | { readonly provider: 'llama'; readonly source: string }
  | { readonly provider: 'ssm'; readonly name: string };

/** The body family a model id or ARN names, when it names one (a custom model's ARN holds its base id). */
function bodyOf(modelId: string): InvokeBody | undefined {
  if (/llama/i.test(modelId)) return 'llama';
  if (/titan/i.test(modelId)) return 'titan';
  if (/cohere/i.test(modelId)) return 'cohere';
  if (/mistral/i.test(modelId)) return 'mistral';
  return undefined;
}

/** Splits `<id>#<suffix>` at the last `#`; an ARN never holds one. */
function splitSuffix(rest: string): [string, string | undefined] {
  const hash = rest.lastIndexOf('#');
  return hash > 0 ? [rest.slice(0, hash), rest.slice(hash + 1)] : [rest, undefined];
}

/**
 * Parses `bedrock:<id>`, `bedrock-custom:<id|arn>[#body]`, `sagemaker:<endpoint>[#payload]`,
 * `openai:<baseURL>#<model>`, `llama:<path|hf:URI>` or `ssm:<parameter>`.
 */
export function parseModelSpec(spec: string): ParsedSpec {
  const colon = spec.indexOf(':');
  const provider = spec.slice(0, colon);
  const rest = spec.slice(colon + 1);
  if (colon > 0 && rest) {
    if (provider === 'bedrock') return { provider, modelId: rest };
    if (provider === 'llama') return { provider, source: rest };
    if (provider === 'ssm') return { provider, name: rest };
    if (provider === 'bedrock-custom') {
      const [modelId, suffix] = splitSuffix(rest);
      const body = suffix ?? bodyOf(modelId);
      if (body && (INVOKE_BODIES as readonly string[]).includes(body))
        return { provider, modelId, body: body as InvokeBody };
      throw new ModelConfigError(
        `model spec ${spec}: ${suffix ? `unknown body "${suffix}"` : 'cannot tell its request body from the id'}; ` +
          `end it with #${INVOKE_BODIES.join(', #')}`,
      );
    }
    if (provider === 'sagemaker') {
      const [endpoint, suffix] = splitSuffix(rest);
      const payload = suffix ?? 'tgi';
      if ((SAGEMAKER_PAYLOADS as readonly string[]).includes(payload))
        return { provider, endpoint, payload: payload as SageMakerPayload };
      throw new ModelConfigError(`model spec ${spec}: unknown payload "${payload}"; use #tgi or #messages`);
    }
    if (provider === 'openai') {
      const hash = rest.lastIndexOf('#');
      if (hash > 0 && hash < rest.length - 1)
        return { provider, baseURL: rest.slice(0, hash), model: rest.slice(hash + 1) };
      throw new ModelConfigError(`model spec ${spec}: write openai:<baseURL>#<model>`);
    }
  }
  throw new ModelConfigError(
    `unknown model spec "${spec}": use bedrock:<modelId>, bedrock-custom:<arn>[#body], sagemaker:<endpoint>, ` +
      'openai:<baseURL>#<model>, llama:<path.gguf|hf:URI> or ssm:<parameter>',
  );
}

/** Builds each model client once per process and shares it between stages. */
export class ModelRegistry {
  private readonly clients = new Map<string, Promise<ModelClient>>();

  constructor(private readonly options: RegistryOptions = {}) {}

  /** The client for a spec, built on first use. */
  get(spec: string): Promise<ModelClient> {
    let client = this.clients.get(spec);
    if (!client) {
      client = this.create(spec);
      this.clients.set(spec, client);
      client.catch(() => this.clients.delete(spec));
    }
    return client;
  }

  /** Frees every client that holds resources (in-process models). */
  async closeAll(): Promise<void> {
    const clients = await Promise.allSettled(this.clients.values());
    this.clients.clear();
    for (const c of clients) if (c.status === 'fulfilled') await c.value.close?.();
  }

  private async create(spec: string): Promise<ModelClient> {
    const parsed = parseModelSpec(spec);
    // Providers load lazily: a Lambda bundle never pulls in node-llama-cpp.
    switch (parsed.provider) {
      case 'bedrock': {
        const { BedrockModelClient } = await import('./bedrock.js');
        return new BedrockModelClient({ spec, modelId: parsed.modelId });
      }
      case 'openai': {
        const { OpenAiModelClient } = await import('./openai.js');
        return new OpenAiModelClient({ spec, baseURL: parsed.baseURL, model: parsed.model });
      }
      case 'llama': {
        const { LlamaModelClient } = await import('./llama.js');
        return new LlamaModelClient({ spec, source: parsed.source, cacheDir: this.options.cacheDir });
      }
      case 'bedrock-custom': {
        const { BedrockInvokeModelClient } = await import('./bedrock-invoke.js');
        return new BedrockInvokeModelClient({ spec, modelId: parsed.modelId, body: parsed.body });
      }
      case 'sagemaker': {
        const { SageMakerModelClient } = await import('./sagemaker.js');
        return new SageMakerModelClient({ spec, endpoint: parsed.endpoint, payload: parsed.payload });
      }
      case 'ssm': {
        const parameters = this.options.parameters;
        if (!parameters)
          throw new ModelConfigError(
            `${spec}: no parameter store to read it from; give the model spec itself`,
          );
        const resolved = await resolveModelSpec(spec, parameters);
        return this.get(resolved);
      }
    }
  }
}

/**
 * The spec an `ssm:` spec stands for, read from the parameter store; any other spec as it is. A
 * parameter may not name another parameter.
 */
export async function resolveModelSpec(spec: string, parameters: ParameterStore): Promise<string> {
  const parsed = parseModelSpec(spec);
  if (parsed.provider !== 'ssm') return spec;
  const value = (await parameters.get(parsed.name))?.trim();
  if (!value)
    throw new ModelConfigError(
      `${spec}: parameter ${parsed.name} does not exist or is empty; has ReverseTuning finished?`,
    );
  const resolved = parseModelSpec(value);
  if (resolved.provider === 'ssm') throw new ModelConfigError(`${spec}: holds ${value}, another parameter`);
  return value;
}
