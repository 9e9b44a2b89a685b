import { InvokeEndpointCommand, SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { z } from 'zod';
import { ModelConfigError, ModelRefusedError, ModelTransientError } from '../errors.js';
import { containerError, mapAwsError } from './aws-errors.js';
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
import { SAGEMAKER_PAYLOADS, type SageMakerPayload } from './registry.js';

/** Options of a {@link SageMakerModelClient}. */
export interface SageMakerModelClientOptions {
  /** The spec the client was made from, e.g. `sagemaker:my-endpoint#messages`. */
  readonly spec: string;
  /** The SageMaker real-time endpoint name. */
  readonly endpoint: string;
  /** The JSON the endpoint's container takes: TGI/LMI/vLLM `inputs`, or OpenAI-style `messages`. */
  readonly payload: SageMakerPayload;
  /** The runtime client; default a process-wide client that leaves retries to the governor. */
  readonly client?: SageMakerRuntimeClient;
}

const Generation = z.object({
  generated_text: z.string(),
  details: z.object({ generated_tokens: Count.nullish() }).nullish(),
});

/** A TGI or LMI answer: `[{generated_text, details?}]` from TGI, `{generated_text, details?}` from LMI. */
const TgiResponse = z.union([nonEmpty(Generation), Generation]).transform((b): Reading => {
  const generation = Array.isArray(b) ? b[0] : b;
  return { text: generation.generated_text, outputTokens: generation.details?.generated_tokens ?? undefined };
});

/** An OpenAI-style chat completion, as TGI's and LMI's Messages API return it. */
const MessagesResponse = z
  .object({
    choices: nonEmpty(
      z.object({
        message: z.object({ content: z.string().nullish() }),
        finish_reason: z.string().nullish(),
      }),
    ),
    usage: z.object({ prompt_tokens: Count.nullish(), completion_tokens: Count.nullish() }).nullish(),
  })
  .transform((b): Reading => {
    const [first] = b.choices;
    return {
      text: first.message.content ?? '',
      inputTokens: b.usage?.prompt_tokens ?? undefined,
      outputTokens: b.usage?.completion_tokens ?? undefined,
      refusal: first.finish_reason === 'content_filter' ? 'content_filter' : undefined,
    };
  });

let sharedClient: SageMakerRuntimeClient | undefined;

/**
 * The process-wide runtime client. It makes one attempt per call: the pipeline's rate governor owns
 * retries, and two retry layers would multiply each other.
 */
function defaultClient(): SageMakerRuntimeClient {
  sharedClient ??= new SageMakerRuntimeClient({
    maxAttempts: 1,
    // A hung connection would otherwise hold the Lambda until its 15-minute timeout.
    requestHandler: { requestTimeout: 120_000 },
  });
  return sharedClient;
}

/**
 * A model on a SageMaker real-time endpoint, called through InvokeEndpoint with JSON.
 *
 * `tgi` sends the RAW prompt as `inputs` (`request.system` and a blank line first, only when the system
 * prompt is not blank), for a model tuned on a prompt/completion format; `messages` sends a system
 * message (only when not blank) and a user message, and the container applies the model's chat
 * template.
 *
 * Usage: `messages` reports both counts. `tgi` reports the output tokens (`details.generated_tokens`)
 * but not the input tokens, which are ESTIMATED as ceil(characters / 4); so is any count a container
 * leaves out.
 *
 * `modelId` is `sagemaker:<endpoint>`. SageMaker bills per instance-hour, not per token, so the
 * built-in price table has no entry and the ledger counts such calls at 0 USD unless the config's
 * `prices` gives this id an amortized per-token price.
 */
export class SageMakerModelClient implements ModelClient {
  readonly spec: string;
  readonly modelId: string;
  /** The endpoint name InvokeEndpoint is sent to. */
  readonly endpoint: string;
  /** The JSON requests are written in and responses read as. */
  readonly payload: SageMakerPayload;
  private readonly client: SageMakerRuntimeClient | undefined;

  constructor({ spec, endpoint, payload, client }: SageMakerModelClientOptions) {
    this.spec = spec;
    this.modelId = `sagemaker:${endpoint}`;
    this.endpoint = endpoint;
    this.payload = payload;
    this.client = client;
  }

  /** Sends one prompt; returns the generated text, trimmed. */
  async generate(request: GenerateRequest): Promise<GenerateResult> {
    const { text, usage } = await this.invoke(request, request.prompt);
    return { text: text.trim(), usage };
  }

  /**
   * Asks for a JSON object matching `request.schema` in the prompt, then parses and validates the text:
   * off-schema is a JudgeAnswerError. The schema travels in the prompt rather than as a response
   * format, which not every TGI, LMI or vLLM version takes.
   */
  async judge<T>(request: JudgeRequest<T>): Promise<JudgeResult<T>> {
    const { text, usage } = await this.invoke(request, jsonAnswerPrompt(request));
    return { value: checkAnswer(request, parseJsonAnswer(text), usage, this.modelId), usage };
  }

  private async invoke(request: GenerateRequest, prompt: string): Promise<{ text: string; usage: Usage }> {
    // What the model reads, for the estimate when the container reports no input tokens.
    const sentText = rawPrompt(request.system, prompt);
    const command = new InvokeEndpointCommand({
      EndpointName: this.endpoint,
      ContentType: 'application/json',
      Accept: 'application/json',
      Body: new TextEncoder().encode(JSON.stringify(this.body(request, prompt))),
    });

    let raw: Uint8Array | undefined;
    try {
      raw = (await (this.client ?? defaultClient()).send(command)).Body;
    } catch (error) {
      throw mapSageMakerError(error, this.endpoint);
    }

    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(raw ?? new Uint8Array()));
    } catch (error) {
      // A 200 that is not JSON comes from a container mid-restart, not from the model.
      throw new ModelTransientError(`sagemaker ${this.endpoint}: the response body is not JSON`, {
        cause: error,
      });
    }
    const parsed = (this.payload === 'tgi' ? TgiResponse : MessagesResponse).safeParse(json);
    if (!parsed.success) {
      // Every call would fail the same way: the spec names the wrong payload for this container.
      const other = SAGEMAKER_PAYLOADS.filter((p) => p !== this.payload);
      throw new ModelConfigError(
        `sagemaker ${this.endpoint}: the response is not a ${this.payload} answer (${zodSummary(parsed.error)}); ` +
          `if the container speaks another payload, end the spec with #${other.join(', #')}`,
        { cause: parsed.error },
      );
    }

    const reading = parsed.data;
    const usage: Usage = {
      inputTokens: reading.inputTokens ?? estimateTokens(sentText),
      outputTokens: reading.outputTokens ?? estimateTokens(reading.text),
    };
    if (reading.refusal)
      throw new ModelRefusedError(`${this.modelId} stopped with ${reading.refusal}`, usage);
    return { text: reading.text, usage };
  }

  private body(request: GenerateRequest, prompt: string): Record<string, unknown> {
    if (this.payload === 'messages') {
      const system = request.system.trim() ? [{ role: 'system', content: request.system }] : [];
      return {
        messages: [...system, { role: 'user', content: prompt }],
        max_tokens: request.maxTokens,
        temperature: request.temperature,
      };
    }
    return {
      inputs: rawPrompt(request.system, prompt),
      parameters: {
        max_new_tokens: request.maxTokens,
        // TGI rejects temperature 0 ("must be strictly positive"): greedy decoding is do_sample false.
        ...(request.temperature > 0
          ? { do_sample: true, temperature: request.temperature }
          : { do_sample: false }),
        return_full_text: false,
        details: true,
      },
    };
  }
}

const THROTTLED = new Set(['ThrottlingException', 'TooManyRequestsException']);
// ModelNotReadyException (HTTP 429) is a model still loading on the endpoint, not a quota.
const TRANSIENT = new Set([
  'ModelNotReadyException',
  'ServiceUnavailable',
  'InternalFailure',
  'InternalDependencyException',
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
]);
const CONFIG = new Set(['AccessDeniedException', 'UnrecognizedClientException']);

/** Maps an SDK or network error to the pipeline's named errors; keeps the original as `cause`. */
function mapSageMakerError(error: unknown, endpoint: string): unknown {
  return mapAwsError(error, {
    who: `sagemaker ${endpoint}`,
    service: 'SageMaker',
    throttled: THROTTLED,
    transient: TRANSIENT,
    // The container answered with an error (HTTP 424): its own status tells a busy or failing container
    // from a request it rejects, or from a container that does not serve this request at all.
    early: (e, message) => {
      if (e.name !== 'ModelError') return undefined;
      const original = e.OriginalStatusCode;
      if (original === 401 || original === 403 || original === 404)
        return new ModelConfigError(`${message} (the container at ${endpoint} does not serve this request)`, {
          cause: e,
        });
      return containerError(original, message, e);
    },
    late: (e, message) => {
      const status = e.$metadata?.httpStatusCode;
      if (e.name === 'ValidationError')
        return new ModelConfigError(
          `${message} (check that endpoint ${endpoint} exists in this region, is InService and takes JSON)`,
          { cause: e },
        );
      if (CONFIG.has(e.name) || status === 401 || status === 403)
        return new ModelConfigError(`${message} (check sagemaker:InvokeEndpoint access to ${endpoint})`, {
          cause: e,
        });
      return undefined;
    },
  });
}
