import { ModelConfigError } from '../errors.js';
import type { ModelClient } from './model-client.js';

/** Options shared by the providers a registry builds. */
export interface RegistryOptions {
  /** Where downloaded local models are kept; default `~/.cache/safer-instruct/models`. */
  readonly cacheDir?: string;
}

/** A parsed model spec. */
export type ParsedSpec =
  | { readonly provider: 'bedrock'; readonly modelId: string }
  | { readonly provider: 'openai'; readonly baseURL: string; readonly model: string }
  | { readonly provider: 'llama'; readonly source: string };

/** Parses `bedrock:<id>`, `openai:<baseURL>#<model>` or `llama:<path|hf:URI>`. */
export function parseModelSpec(spec: string): ParsedSpec {
  const colon = spec.indexOf(':');
  const provider = spec.slice(0, colon);
  const rest = spec.slice(colon + 1);
  if (colon > 0 && rest) {
    if (provider === 'bedrock') return { provider, modelId: rest };
    if (provider === 'llama') return { provider, source: rest };
    if (provider === 'openai') {
      const hash = rest.lastIndexOf('#');
      if (hash > 0 && hash < rest.length - 1)
        return { provider, baseURL: rest.slice(0, hash), model: rest.slice(hash + 1) };
      throw new ModelConfigError(`model spec ${spec}: write openai:<baseURL>#<model>`);
    }
  }
  throw new ModelConfigError(
    `unknown model spec "${spec}": use bedrock:<modelId>, openai:<baseURL>#<model> or llama:<path.gguf|hf:URI>`,
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
    }
  }
}
