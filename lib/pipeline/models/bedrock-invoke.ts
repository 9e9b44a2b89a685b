import { BedrockRuntimeClient, InvokeModelCommand } from '@aws-sdk/client-bedrock-runtime';
import { z } from 'zod';
import { ModelConfigError, ModelRefusedError, ModelTransientError } from '../errors.js';
import {
  BEDROCK_CONFIG,
  BEDROCK_THROTTLED,
  BEDROCK_TRANSIENT,
  containerError,
  mapAwsError,
} from './aws-errors.js';
import {
  checkAnswer,
  type GenerateRequest,
  type GenerateResult,
  type JudgeRequest,
  type JudgeResult,
  type ModelClient,
  parseJsonAnswer,
  type Usage,
} from './model-client.js';
import {
  Count,
  estimateTokens,
  jsonAnswerPrompt,
  nonEmpty,
  type Reading,
  rawPrompt,
  zodSummary,
} from './raw-prompting.js';
import { INVOKE_BODIES, type InvokeBody } from './registry.js';

/** Options of a {@link BedrockInvokeModelClient}. */
export interface BedrockInvokeModelClientOptions {
  /** The spec the client was made from, e.g. `bedrock-custom:arn:aws:bedrock:...:provisioned-model/abc#llama`. */
  readonly spec: string;
  /** The model id or ARN: a provisioned-model, custom-model-deployment, custom-model or imported-model ARN. */
  readonly modelId: string;
  /** The request and response body family the model speaks. */
  readonly body: InvokeBody;
  /** The runtime client; default a process-wide client that leaves retries to the governor. */
  readonly client?: BedrockRuntimeClient;
}

/** How one body family asks and answers. */
interface Family {
  readonly request: (prompt: string, request: GenerateRequest) => Record<string, unknown>;
  readonly response: z.ZodType<Reading>;
}

/** Request and response bodies by family, as in Bedrock's "Inference request parameters" pages. */
const FAMILIES: Record<InvokeBody, Family> = {
  llama: {
    request: (prompt, r) => ({ prompt, max_gen_len: r.maxTokens, temperature: r.temperature }),
    response: z
      .object({
        generation: z.string(),
        prompt_token_count: Count.nullish(),
        generation_token_count: Count.nullish(),
      })
      .transform((b) => ({
        text: b.generation,
        inputTokens: b.prompt_token_count ?? undefined,
        outputTokens: b.generation_token_count ?? undefined,
      })),
  },
  titan: {
    request: (prompt, r) => ({
      inputText: prompt,
      textGenerationConfig: { maxTokenCount: r.maxTokens, temperature: r.temperature },
    }),
    response: z
      .object({
        inputTextTokenCount: Count.nullish(),
        results: nonEmpty(
          z.object({
            outputText: z.string(),
            tokenCount: Count.nullish(),
            completionReason: z.string().nullish(),
          }),
        ),
      })
      .transform((b) => {
        const [first] = b.results;
        return {
          text: first.outputText,
          inputTokens: b.inputTextTokenCount ?? undefined,
          outputTokens: first.tokenCount ?? undefined,
          refusal: first.completionReason === 'CONTENT_FILTERED' ? 'CONTENT_FILTERED' : undefined,
        };
      }),
  },
  cohere: {
    request: (prompt, r) => ({ prompt, max_tokens: r.maxTokens, temperature: r.temperature }),
    response: z
      .object({
        generations: nonEmpty(z.object({ text: z.string(), finish_reason: z.string().nullish() })),
      })
      .transform((b) => {
        const [first] = b.generations;
        return {
          text: first.text,
          refusal: first.finish_reason === 'ERROR_TOXIC' ? 'ERROR_TOXIC' : undefined,
        };
      }),
  },
  mistral: {
    request: (prompt, r) => ({ prompt, max_tokens: r.maxTokens, temperature: r.temperature }),
    response: z
      .object({ outputs: nonEmpty(z.object({ text: z.string() })) })
      .transform((b) => ({ text: b.outputs[0].text })),
  },
  completion: {
    request: (prompt, r) => ({ prompt, max_tokens: r.maxTokens, temperature: r.temperature }),
    response: z
      .object({
        choices: nonEmpty(z.object({ text: z.string(), finish_reason: z.string().nullish() })),
        usage: z.object({ prompt_tokens: Count.nullish(), completion_tokens: Count.nullish() }).nullish(),
      })
      .transform((b) => {
        const [first] = b.choices;
        return {
          text: first.text,
          inputTokens: b.usage?.prompt_tokens ?? undefined,
          outputTokens: b.usage?.completion_tokens ?? undefined,
          refusal: first.finish_reason === 'content_filter' ? 'content_filter' : undefined,
        };
      }),
  },
};

let sharedClient: BedrockRuntimeClient | undefined;

/**
 * The process-wide runtime client. It makes one attempt per call: the pipeline's rate governor owns
 * retries, because a per-minute quota needs longer backoff than the SDK's, and two retry layers
 * would multiply each other.
 */
function defaultClient(): BedrockRuntimeClient {
  sharedClient ??= new BedrockRuntimeClient({
    maxAttempts: 1,
    // A hung connection would otherwise hold the Lambda until its 15-minute timeout.
    requestHandler: { requestTimeout: 120_000 },
  });
  return sharedClient;
}

/**
 * A Bedrock custom model (through its provisioned-model or custom-model-deployment ARN) or a Custom
 * Model Import model, called through InvokeModel with the RAW prompt.
 *
 * These models were fine-tuned on a prompt/completion format, so no chat template is applied: the
 * model sees `request.prompt`, preceded by `request.system` and a blank line only when the system
 * prompt is not blank. The request and response bodies follow the model family (`body`). A bare
 * custom-model ARN cannot be invoked: the ModelConfigError its first call throws says what to serve it with.
 *
 * Usage: the token counts the body reports; else the `x-amzn-bedrock-input-token-count` and
 * `x-amzn-bedrock-output-token-count` response headers. The SDK surfaces neither in
 * `InvokeModelCommandOutput` (it binds only the content-type, latency and service-tier headers) nor
 * in `$metadata` (status, request ids, attempts), so a middleware on each command reads them off the
 * raw HTTP response. Without either (a mocked client), a count is ESTIMATED as ceil(characters / 4).
 */
export class BedrockInvokeModelClient implements ModelClient {
  readonly spec: string;
  /** The model id or ARN, as the price table and the record name it. */
  readonly modelId: string;
  /** The body family requests are written in and responses read as. */
  readonly body: InvokeBody;
  private readonly client: BedrockRuntimeClient | undefined;

  constructor({ spec, modelId, body, client }: BedrockInvokeModelClientOptions) {
    this.spec = spec;
    this.modelId = modelId;
    this.body = body;
    this.client = client;
  }

  /** Sends the raw prompt; returns the completion text, trimmed. */
  async generate(request: GenerateRequest): Promise<GenerateResult> {
    const { text, usage } = await this.invoke(request, request.prompt);
    return { text: text.trim(), usage };
  }

  /**
   * Asks for a JSON object matching `request.schema` in the prompt (InvokeModel has no tool use for
   * these models), then parses and validates the text: off-schema is a JudgeAnswerError.
   */
  async judge<T>(request: JudgeRequest<T>): Promise<JudgeResult<T>> {
    const { text, usage } = await this.invoke(request, jsonAnswerPrompt(request));
    return { value: checkAnswer(request, parseJsonAnswer(text), usage, this.modelId), usage };
  }

  private async invoke(
    request: GenerateRequest,
    userPrompt: string,
  ): Promise<{ text: string; usage: Usage }> {
    const family = FAMILIES[this.body];
    const prompt = rawPrompt(request.system, userPrompt);
    const command = new InvokeModelCommand({
      modelId: this.modelId,
      contentType: 'application/json',
      accept: 'application/json',
      body: new TextEncoder().encode(JSON.stringify(family.request(prompt, request))),
    });
    const headerTokens = captureTokenHeaders(command);

    let raw: Uint8Array | undefined;
    try {
      raw = (await (this.client ?? defaultClient()).send(command)).body;
    } catch (error) {
      throw mapInvokeError(error, this.modelId, this.body);
    }

    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(raw ?? new Uint8Array()));
    } catch (error) {
      // A 200 that is not JSON comes from a proxy or a container mid-restart, not from the model.
      throw new ModelTransientError(`bedrock ${this.modelId}: the response body is not JSON`, {
        cause: error,
      });
    }
    const parsed = family.response.safeParse(json);
    if (!parsed.success)
      // Every call would fail the same way: the spec names the wrong family for this model.
      throw new ModelConfigError(
        `bedrock ${this.modelId}: the response is not a ${this.body} body (${zodSummary(parsed.error)}); ` +
          familyHint(this.body),
        { cause: parsed.error },
      );

    const reading = parsed.data;
    const fromHeaders = headerTokens();
    const usage: Usage = {
      inputTokens: reading.inputTokens ?? fromHeaders.inputTokens ?? estimateTokens(prompt),
      outputTokens: reading.outputTokens ?? fromHeaders.outputTokens ?? estimateTokens(reading.text),
    };
    if (reading.refusal)
      throw new ModelRefusedError(`${this.modelId} stopped with ${reading.refusal}`, usage);
    return { text: reading.text, usage };
  }
}

interface HeaderTokens {
  readonly inputTokens?: number | undefined;
  readonly outputTokens?: number | undefined;
}

/**
 * Adds a middleware to `command` that keeps the token-count headers of its raw HTTP response, which
 * the deserialized output drops. Returns a reader of what it kept; empty until the call returns, and
 * for ever when the client never runs the middleware stack (a mock).
 */
function captureTokenHeaders(command: InvokeModelCommand): () => HeaderTokens {
  let tokens: HeaderTokens = {};
  command.middlewareStack.add(
    (next) => async (args) => {
      const result = await next(args);
      const headers = (result.response as { headers?: unknown } | undefined)?.headers;
      if (headers && typeof headers === 'object') {
        const header = (name: string) =>
          Object.entries(headers).find(([key]) => key.toLowerCase() === name)?.[1] as unknown;
        tokens = {
          inputTokens: countOf(header('x-amzn-bedrock-input-token-count')),
          outputTokens: countOf(header('x-amzn-bedrock-output-token-count')),
        };
      }
      return result;
    },
    { step: 'deserialize', name: 'saferInstructTokenCountHeaders' },
  );
  return () => tokens;
}

function countOf(value: unknown): number | undefined {
  if (typeof value !== 'string' || !/^\d+$/.test(value.trim())) return undefined;
  return Number(value.trim());
}

const BODY_MISMATCH = /extraneous key|required key \[[^\]]*\] not found/i;
// Request-level validation messages that mean the model, not the record, is wrong.
const CONFIG_VALIDATION =
  /model identifier is invalid|invalid model identifier|on-demand throughput isn.t supported|provisioned throughput|custom model deployment/i;

/** What to do when the body family does not fit the model. */
function familyHint(body: InvokeBody): string {
  const others = INVOKE_BODIES.filter((b) => b !== body);
  return `the model does not speak the ${body} body: end the spec with its family, one of #${others.join(', #')}`;
}

/** What to check when a custom or imported model cannot be invoked as configured. */
function configHint(modelId: string): string {
  if (/:custom-model\//.test(modelId))
    return (
      'a custom model needs provisioned throughput or a custom model deployment before it can be invoked: ' +
      'give the provisioned-model or custom-model-deployment ARN'
    );
  if (/:(provisioned-model|custom-model-deployment)\//.test(modelId))
    return 'check that the provisioned throughput or deployment exists, is InService, and is in this region';
  if (/:imported-model\//.test(modelId))
    return 'check that the imported model exists in this region and that the role may bedrock:InvokeModel on it';
  return 'check the model id or ARN, its region and bedrock:InvokeModel access';
}

/** Maps an SDK or network error to the pipeline's named errors, as bedrock.ts does; keeps the original as `cause`. */
function mapInvokeError(error: unknown, modelId: string, body: InvokeBody): unknown {
  return mapAwsError(error, {
    who: `bedrock ${modelId}`,
    service: 'Bedrock',
    throttled: BEDROCK_THROTTLED,
    transient: BEDROCK_TRANSIENT,
    // An imported model's container failed (HTTP 424): its own status tells a busy container from a bad request.
    early: (e, message) =>
      e.name === 'ModelErrorException' ? containerError(e.originalStatusCode, message, e) : undefined,
    late: (e, message) => {
      const status = e.$metadata?.httpStatusCode;
      const validation = e.name === 'ValidationException';
      if (validation && BODY_MISMATCH.test(e.message))
        return new ModelConfigError(`${message} (${familyHint(body)})`, { cause: e });
      if (
        BEDROCK_CONFIG.has(e.name) ||
        status === 401 ||
        status === 403 ||
        (validation && CONFIG_VALIDATION.test(e.message))
      )
        return new ModelConfigError(`${message} (${configHint(modelId)})`, { cause: e });
      return undefined;
    },
  });
}
