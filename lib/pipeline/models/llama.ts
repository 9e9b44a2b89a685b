import { open, stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import type {
  ChatHistoryItem,
  GbnfJsonObjectSchema,
  Llama,
  LlamaChat,
  LlamaContext,
  LlamaGrammar,
  LlamaModel,
} from 'node-llama-cpp';
import type { z } from 'zod';
import { cacheRoot } from '../cache-dir.js';
import { ModelConfigError, ModelRequestError } from '../errors.js';
import {
  checkAnswer,
  type GenerateRequest,
  type GenerateResult,
  type JudgeRequest,
  type JudgeResult,
  jsonSchemaOf,
  type ModelClient,
  parseJsonAnswer,
  type Usage,
} from './model-client.js';

/** The largest context a client allocates, whatever the model was trained on: the KV cache lives in RAM. */
const MAX_CONTEXT_SIZE = 4096;
/** How long a download may go without progress (including before its first byte) before it counts as failed. */
const DOWNLOAD_STALL_MS = 20_000;
const CONNECTIVITY_CHECK_MS = 10_000;
/** Integer ranges up to this size become an enum in the grammar, which cannot express minimum/maximum. */
const MAX_INTEGER_ENUM = 64;

/** Where downloaded models are kept when the registry names no directory. */
export function defaultModelCacheDir(env: Record<string, string | undefined> = process.env): string {
  return join(cacheRoot(env), 'models');
}

/**
 * The context threads: `SAFER_INSTRUCT_LLAMA_THREADS`, else half the cores (at most 8), so the model leaves
 * room for the rest of the run; 1 on a 2-core machine.
 */
export function llamaThreads(
  env: Record<string, string | undefined> = process.env,
  cores = availableParallelism(),
): number {
  const raw = env.SAFER_INSTRUCT_LLAMA_THREADS?.trim();
  if (!raw) return Math.min(8, Math.max(1, Math.floor(cores / 2)));
  const threads = Number(raw);
  if (!Number.isInteger(threads) || threads < 1)
    throw new ModelConfigError(`SAFER_INSTRUCT_LLAMA_THREADS must be a positive integer, not "${raw}"`);
  return threads;
}

/**
 * A GGUF model run in process with node-llama-cpp, on the CPU, one call at a time.
 *
 * `source` is a path to a `.gguf` file or an `hf:` URI, downloaded into `cacheDir` on first use. The model
 * loads on the first call; clients with the same source share the loaded weights, each with its own context.
 */
export class LlamaModelClient implements ModelClient {
  readonly spec: string;
  readonly modelId: string;
  private readonly source: string;
  private readonly cacheDir: string;
  private loaded?: Promise<Loaded>;
  private tail: Promise<unknown> = Promise.resolve();

  constructor({ spec, source, cacheDir }: { spec: string; source: string; cacheDir?: string }) {
    this.spec = spec;
    this.source = source;
    this.modelId = source;
    this.cacheDir = cacheDir ?? defaultModelCacheDir();
  }

  /** One single-turn chat answer, trimmed. */
  generate(request: GenerateRequest): Promise<GenerateResult> {
    return this.serialize(async () => this.respond(await this.load(), request));
  }

  /** One answer constrained by a grammar built from `schema`, then validated by it. */
  judge<T>(request: JudgeRequest<T>): Promise<JudgeResult<T>> {
    return this.serialize(async () => {
      const loaded = await this.load();
      const grammar = await loaded.grammarFor(request.schema);
      const system = [
        request.system,
        `Answer with only the JSON object for "${request.toolName}": ${request.toolDescription}`,
      ]
        .filter(Boolean)
        .join('\n\n');
      const { text, usage } = await this.respond(loaded, { ...request, system }, grammar);
      return { value: checkAnswer(request, parseJsonAnswer(text), usage, this.modelId), usage };
    });
  }

  /** The weights' file as loaded: its absolute path, size and modification time. */
  async identity(): Promise<string> {
    const { path } = await this.load();
    const info = await stat(path);
    return `${path}:${info.size}:${info.mtimeMs}`;
  }

  /** Resolves, downloads when needed, and loads the model now rather than on the first call. */
  async warmUp(): Promise<void> {
    await this.load();
  }

  /** Frees the context, and the model and llama.cpp binding when no other client uses them. */
  close(): Promise<void> {
    return this.serialize(async () => {
      const loading = this.loaded;
      this.loaded = undefined;
      const loaded = await loading?.catch(() => undefined);
      if (!loaded) return;
      loaded.chat.dispose();
      await loaded.context.dispose();
      await releaseModel(loaded.path);
    });
  }

  private serialize<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }

  private load(): Promise<Loaded> {
    if (!this.loaded) {
      const loading = this.open();
      this.loaded = loading;
      // A failed load is not cached: the file may appear, or the network come back.
      loading.catch(() => {
        if (this.loaded === loading) this.loaded = undefined;
      });
    }
    return this.loaded;
  }

  private async open(): Promise<Loaded> {
    const threads = llamaThreads();
    const path = isRemote(this.source)
      ? await download(this.source, this.cacheDir)
      : await checkGguf(resolve(this.source));
    const { llama, model } = await acquireModel(path);
    try {
      const context = await model.createContext({
        contextSize: Math.min(model.trainContextSize, MAX_CONTEXT_SIZE),
        sequences: 1,
        threads,
      });
      const { LlamaChat } = await nodeLlamaCpp();
      const chat = new LlamaChat({ contextSequence: context.getSequence() });
      const grammars = new WeakMap<z.ZodType, Promise<LlamaGrammar>>();
      const grammarFor = (schema: z.ZodType) => {
        let grammar = grammars.get(schema);
        if (!grammar) {
          grammar = grammarForSchema(llama, schema);
          grammars.set(schema, grammar);
        }
        return grammar;
      };
      return { path, model, context, chat, grammarFor };
    } catch (error) {
      await releaseModel(path);
      throw new ModelConfigError(`cannot create a context for ${path}: ${message(error)}`, { cause: error });
    }
  }

  private async respond(
    { model, context, chat }: Loaded,
    request: GenerateRequest,
    grammar?: LlamaGrammar,
  ): Promise<GenerateResult> {
    // A fresh history each call; LlamaChat reuses only the matching prefix of the sequence's KV cache.
    const history: ChatHistoryItem[] = [
      ...(request.system ? [{ type: 'system' as const, text: request.system }] : []),
      { type: 'user', text: request.prompt },
      { type: 'model', response: [] },
    ];
    const { contextText } = chat.chatWrapper.generateContextState({ chatHistory: history });
    const inputTokens = contextText.tokenize(model.tokenizer).length;
    const room = context.contextSize - inputTokens;
    if (room < 1)
      throw new ModelRequestError(
        `prompt of ${inputTokens} tokens does not fit the ${context.contextSize}-token context of ${this.modelId}`,
      );
    // The sequence's meter counts every sampled token, including ones held back from the text at a cut-off.
    const before = chat.sequence.tokenMeter.getState();
    const response = await chat.generateResponse(history, {
      maxTokens: Math.max(1, Math.min(request.maxTokens, room)),
      temperature: request.temperature,
      grammar,
    });
    const outputTokens = chat.sequence.tokenMeter.diff(before).usedOutputTokens;
    const usage: Usage = { inputTokens, outputTokens };
    return { text: response.response.trim(), usage };
  }
}

interface Loaded {
  readonly path: string;
  readonly model: LlamaModel;
  readonly context: LlamaContext;
  readonly chat: LlamaChat;
  readonly grammarFor: (schema: z.ZodType) => Promise<LlamaGrammar>;
}

interface Shared<T> {
  readonly value: Promise<T>;
  users: number;
}

// Loaded on first use, never at import: Lambda bundles leave node-llama-cpp out, and a static import of it
// would fail every function at cold start.
const nodeLlamaCpp = () => import('node-llama-cpp');

// getLlama and model loads are expensive: one binding per process, one loaded model per file, counted by
// their users so the last one to close frees them.
let sharedLlama: Shared<Llama> | undefined;
const sharedModels = new Map<string, Shared<{ llama: Llama; model: LlamaModel }>>();

function acquireLlama(): Promise<Llama> {
  if (!sharedLlama) {
    const created: Shared<Llama> = {
      users: 0,
      value: nodeLlamaCpp()
        .then(({ getLlama, LlamaLogLevel }) =>
          getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.warn }),
        )
        .catch((error: unknown) => {
          throw new ModelConfigError(`no usable llama.cpp binary for this machine: ${message(error)}`, {
            cause: error,
          });
        }),
    };
    created.value.catch(() => {
      if (sharedLlama === created) sharedLlama = undefined;
    });
    sharedLlama = created;
  }
  const entry = sharedLlama;
  entry.users++;
  return entry.value.catch((error: unknown) => {
    entry.users--;
    throw error;
  });
}

async function releaseLlama(): Promise<void> {
  const entry = sharedLlama;
  if (!entry || --entry.users > 0) return;
  sharedLlama = undefined;
  await (await entry.value).dispose();
}

function acquireModel(path: string): Promise<{ llama: Llama; model: LlamaModel }> {
  let entry = sharedModels.get(path);
  if (!entry) {
    const created: Shared<{ llama: Llama; model: LlamaModel }> = { users: 0, value: loadModel(path) };
    created.value.catch(() => {
      if (sharedModels.get(path) === created) sharedModels.delete(path);
    });
    sharedModels.set(path, created);
    entry = created;
  }
  const acquired = entry;
  acquired.users++;
  return acquired.value.catch((error: unknown) => {
    acquired.users--;
    throw error;
  });
}

async function loadModel(path: string): Promise<{ llama: Llama; model: LlamaModel }> {
  const llama = await acquireLlama();
  try {
    return { llama, model: await llama.loadModel({ modelPath: path }) };
  } catch (error) {
    await releaseLlama();
    throw new ModelConfigError(`cannot load model ${path}: ${message(error)}`, { cause: error });
  }
}

async function releaseModel(path: string): Promise<void> {
  const entry = sharedModels.get(path);
  if (!entry || --entry.users > 0) return;
  sharedModels.delete(path);
  await (await entry.value).model.dispose();
  await releaseLlama();
}

function isRemote(source: string): boolean {
  return /^(hf:|huggingface:|https?:\/\/)/i.test(source);
}

/** Checks a local file is there and starts with the GGUF magic, so a wrong path fails with a clear message. */
async function checkGguf(path: string): Promise<string> {
  const info = await stat(path).catch(() => undefined);
  if (!info) throw new ModelConfigError(`model file not found: ${path}`);
  if (!info.isFile()) throw new ModelConfigError(`model path is not a file: ${path}`);
  const file = await open(path, 'r');
  try {
    const magic = Buffer.alloc(4);
    const { bytesRead } = await file.read(magic, 0, 4, 0);
    if (bytesRead < 4 || magic.toString('latin1') !== 'GGUF')
      throw new ModelConfigError(`not a GGUF model file: ${path}`);
  } finally {
    await file.close();
  }
  return path;
}

/** Resolves a remote model into the cache, downloading it when absent. */
async function download(source: string, directory: string): Promise<string> {
  const { resolveModelFile } = await nodeLlamaCpp();
  const cached = await resolveModelFile(source, { directory, download: false, cli: false }).catch(
    () => undefined,
  );
  if (cached) return checkGguf(cached);
  const unreachable = (cause: unknown) =>
    new ModelConfigError(
      `cannot fetch model ${source} (offline?): pick another with --model llama:<file.gguf>, ` +
        'bedrock:<modelId> or openai:<baseURL>#<model>',
      { cause },
    );
  // node-llama-cpp's downloader retries for minutes and takes no signal before its first byte, so a quick
  // probe of the host decides the offline case.
  try {
    await fetch(downloadOrigin(source), {
      method: 'HEAD',
      signal: AbortSignal.timeout(CONNECTIVITY_CHECK_MS),
    });
  } catch (error) {
    throw unreachable(error);
  }
  const progress = process.stderr.isTTY ? progressPrinter(source) : undefined;
  let stall: NodeJS.Timeout | undefined;
  try {
    const path = await new Promise<string>((resolvePath, reject) => {
      const arm = () => {
        clearTimeout(stall);
        stall = setTimeout(
          () => reject(new Error(`no progress for ${DOWNLOAD_STALL_MS} ms`)),
          DOWNLOAD_STALL_MS,
        );
      };
      arm();
      const onProgress = (status: { totalSize: number; downloadedSize: number }) => {
        arm();
        progress?.print(status);
      };
      resolveModelFile(source, { directory, cli: false, onProgress }).then(resolvePath, reject);
    });
    return await checkGguf(path);
  } catch (error) {
    if (error instanceof ModelConfigError) throw error;
    throw unreachable(error);
  } finally {
    clearTimeout(stall);
    progress?.end();
  }
}

function downloadOrigin(source: string): string {
  if (/^https?:\/\//i.test(source)) return new URL(source).origin;
  return process.env.MODEL_ENDPOINT || process.env.HF_ENDPOINT || 'https://huggingface.co/';
}

function progressPrinter(source: string) {
  let last = 0;
  let printed = false;
  const mb = (n: number) => (n / 1e6).toFixed(1);
  return {
    print({ totalSize, downloadedSize }: { totalSize: number; downloadedSize: number }) {
      const now = Date.now();
      if (now - last < 250 && downloadedSize < totalSize) return;
      last = now;
      printed = true;
      const percent = totalSize > 0 ? Math.floor((downloadedSize / totalSize) * 100) : 0;
      process.stderr.write(
        `\rdownloading ${source}: ${mb(downloadedSize)}/${mb(totalSize)} MB (${percent}%)`,
      );
    },
    end() {
      if (printed) process.stderr.write('\n');
    },
  };
}

/** A grammar for a zod schema; a schema the converter cannot take falls back to any JSON, and zod decides. */
async function grammarForSchema(llama: Llama, schema: z.ZodType): Promise<LlamaGrammar> {
  try {
    // Any member of the schema union will do: the method's const generic cannot infer from the union itself.
    const json = toGbnfJsonSchema(jsonSchemaOf(schema)) as GbnfJsonObjectSchema;
    return await llama.createGrammarForJsonSchema(json);
  } catch {
    return llama.getGrammarFor('json');
  }
}

type Json = Record<string, unknown>;
const ANY_JSON: Json = {
  oneOf: [
    { type: ['string', 'number', 'boolean', 'null'] },
    { type: 'object', additionalProperties: true },
    { type: 'array' },
  ],
};
const ROOT_DEF = '__root';

/**
 * Rewrites a draft-7 JSON schema into the subset node-llama-cpp's grammar converter understands.
 *
 * The converter ignores keywords it does not know and turns `anyOf`, `allOf` and `{}` into `null`, so they are
 * translated: `anyOf` to `oneOf`, `definitions` to `$defs`, a small integer range to an enum, and bounds it
 * cannot express (minimum, pattern, formats other than dates) are dropped; zod validation still checks them.
 */
export function toGbnfJsonSchema(schema: Json): Json {
  let refersToRoot = false;
  const convert = (node: unknown): Json => {
    if (node === false) return { type: 'null' };
    if (node === null || typeof node !== 'object' || Array.isArray(node)) return ANY_JSON;
    const s = node as Json;
    if ('const' in s) return { const: s.const };
    if (Array.isArray(s.enum)) return { enum: s.enum };
    if (typeof s.$ref === 'string') {
      if (s.$ref === '#') {
        refersToRoot = true;
        return { $ref: `#/$defs/${ROOT_DEF}` };
      }
      return { $ref: s.$ref.replace(/^#\/definitions\//, '#/$defs/') };
    }
    const alternatives = (s.anyOf ?? s.oneOf) as unknown[] | undefined;
    if (Array.isArray(alternatives)) return { oneOf: alternatives.map(convert) };
    if (Array.isArray(s.allOf)) {
      const { allOf, ...rest } = s;
      return convert(Object.assign({}, rest, ...(allOf as Json[])));
    }
    const types = Array.isArray(s.type)
      ? (s.type as string[])
      : typeof s.type === 'string'
        ? [s.type]
        : 'properties' in s || 'additionalProperties' in s
          ? ['object']
          : 'items' in s
            ? ['array']
            : [];
    if (types.length === 0) return ANY_JSON;
    const converted = types.map((type) => convertTyped(type, s, convert));
    const basic = converted.filter((c) => Object.keys(c).length === 1 && typeof c.type === 'string');
    if (basic.length === converted.length && basic.length > 1) return { type: basic.map((c) => c.type) };
    return converted.length === 1 ? (converted[0] as Json) : { oneOf: converted };
  };
  const { definitions, $defs, ...root } = schema;
  const defs = Object.fromEntries(
    Object.entries({ ...(definitions as Json | undefined), ...($defs as Json | undefined) }).map(([k, v]) => [
      k,
      convert(v),
    ]),
  );
  const converted = convert(root);
  if (refersToRoot) return { $defs: { ...defs, [ROOT_DEF]: converted }, $ref: `#/$defs/${ROOT_DEF}` };
  return Object.keys(defs).length > 0 ? { ...converted, $defs: defs } : converted;
}

function convertTyped(type: string, s: Json, convert: (node: unknown) => Json): Json {
  const pick = (...keys: string[]) =>
    Object.fromEntries(keys.filter((k) => typeof s[k] === 'number').map((k) => [k, s[k]]));
  switch (type) {
    case 'string':
      if (s.format === 'date-time' || s.format === 'time' || s.format === 'date')
        return { type, format: s.format };
      return { type, ...pick('minLength', 'maxLength') };
    case 'integer': {
      const low = bound(s.minimum, s.exclusiveMinimum, Math.ceil, 1);
      const high = bound(s.maximum, s.exclusiveMaximum, Math.floor, -1);
      if (low !== undefined && high !== undefined && high >= low && high - low < MAX_INTEGER_ENUM)
        return { enum: Array.from({ length: high - low + 1 }, (_, i) => low + i) };
      return { type };
    }
    case 'object': {
      const properties = s.properties as Json | undefined;
      const extra = s.additionalProperties;
      return {
        type,
        ...(properties && {
          properties: Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, convert(v)])),
        }),
        ...(extra !== undefined &&
          extra !== false && { additionalProperties: extra === true ? true : convert(extra) }),
        ...pick('minProperties', 'maxProperties'),
      };
    }
    case 'array': {
      const tuple = Array.isArray(s.items) ? (s.items as unknown[]) : undefined;
      const rest = tuple ? s.additionalItems : s.items;
      return {
        type,
        ...(tuple && { prefixItems: tuple.map(convert) }),
        ...(rest !== undefined && rest !== true && rest !== false && { items: convert(rest) }),
        ...pick('minItems', 'maxItems'),
        ...(tuple && rest === false && { maxItems: tuple.length }),
      };
    }
    default:
      return { type };
  }
}

function bound(
  inclusive: unknown,
  exclusive: unknown,
  round: (n: number) => number,
  step: number,
): number | undefined {
  if (typeof exclusive === 'number') return Number.isInteger(exclusive) ? exclusive + step : round(exclusive);
  return typeof inclusive === 'number' ? round(inclusive) : undefined;
}

function message(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
}
