import {
  BedrockRuntimeClient,
  ConverseCommand,
  type ConverseCommandInput,
  type ConverseCommandOutput,
} from '@aws-sdk/client-bedrock-runtime';
import { ModelConfigError, ModelRefusedError } from '../errors.js';
import { BEDROCK_CONFIG, BEDROCK_THROTTLED, BEDROCK_TRANSIENT, mapAwsError } from './aws-errors.js';
import {
  type ConverseResponse,
  converseBody,
  converseJudgeAnswer,
  converseText,
  converseUsage,
} from './converse-body.js';
import type {
  GenerateRequest,
  GenerateResult,
  JudgeRequest,
  JudgeResult,
  ModelClient,
} from './model-client.js';

/** Options of a {@link BedrockModelClient}. */
export interface BedrockModelClientOptions {
  /** The spec the client was made from, e.g. `bedrock:anthropic.claude-3-haiku-20240307-v1:0`. */
  readonly spec: string;
  /** The Bedrock model id or inference profile id / ARN. */
  readonly modelId: string;
  /** The runtime client; default a process-wide client that leaves retries to the governor. */
  readonly client?: BedrockRuntimeClient;
  /**
   * Whether `judge` forces a tool call (default true). Set false only for models without tool use:
   * the answer is then read as a JSON object from the text.
   */
  readonly toolUse?: boolean;
}

let sharedClient: BedrockRuntimeClient | undefined;

/**
 * The process-wide runtime client. It makes one attempt per call: the pipeline's rate governor owns
 * retries, because a per-minute quota needs longer backoff than the SDK's, and two retry layers
 * would multiply each other.
 */
function defaultClient(): BedrockRuntimeClient {
  sharedClient ??= new BedrockRuntimeClient({
    maxAttempts: 1,
    // A hung stream would otherwise hold the Lambda until its 15-minute timeout.
    requestHandler: { requestTimeout: 120_000 },
  });
  return sharedClient;
}

/** A model served by Amazon Bedrock, called through the Converse API. */
export class BedrockModelClient implements ModelClient {
  readonly spec: string;
  readonly modelId: string;
  private readonly client: BedrockRuntimeClient | undefined;
  private toolUse: boolean;

  constructor({ spec, modelId, client, toolUse = true }: BedrockModelClientOptions) {
    this.spec = spec;
    this.modelId = modelId;
    this.client = client;
    this.toolUse = toolUse;
  }

  /** Sends one system prompt and one user message; returns the answer text, trimmed. */
  async generate(request: GenerateRequest): Promise<GenerateResult> {
    const response = await this.converse(request, true);
    return { text: converseText(response), usage: converseUsage(response) };
  }

  /** Asks for an answer matching `request.schema`, through a forced tool call (or JSON text). */
  async judge<T>(request: JudgeRequest<T>): Promise<JudgeResult<T>> {
    const toolUse = this.toolUse;
    const response = await this.converse(request, toolUse).catch((error: unknown) => {
      if (toolUse && error instanceof Error && TOOLS_UNSUPPORTED.test(error.message)) return undefined;
      throw error;
    });
    if (!response) {
      // This model has no tool use: from now on it answers in JSON text, parsed and validated the same way.
      this.toolUse = false;
      return this.judge(request);
    }
    // converse() throws on refusals; an answer that fails validation throws JudgeAnswerError here.
    return {
      value: converseJudgeAnswer(request, response, this.modelId, toolUse),
      usage: converseUsage(response),
    };
  }

  private async converse(
    request: GenerateRequest | JudgeRequest<unknown>,
    toolUse: boolean,
  ): Promise<ConverseResponse> {
    const input = { modelId: this.modelId, ...converseBody(request, toolUse) } as ConverseCommandInput;
    let response: ConverseCommandOutput;
    try {
      response = await (this.client ?? defaultClient()).send(new ConverseCommand(input));
    } catch (error) {
      throw mapBedrockError(error, this.modelId);
    }
    if (response.stopReason === 'guardrail_intervened' || response.stopReason === 'content_filtered')
      throw new ModelRefusedError(
        `${this.modelId} stopped with ${response.stopReason}`,
        converseUsage(response as ConverseResponse),
      );
    return response as ConverseResponse;
  }
}

// What Bedrock says when a model cannot take a toolConfig (or a forced toolChoice).
const TOOLS_UNSUPPORTED = /doesn.t support (tool use|the toolConfig|toolChoice)|tool use is not supported/i;
// Request-level validation messages that mean the model, not the record, is wrong.
const CONFIG_VALIDATION =
  /model identifier is invalid|invalid model identifier|on-demand throughput isn.t supported|doesn.t support (tool use|the toolConfig)/i;

/** Maps an SDK or network error to the pipeline's named errors; keeps the original as `cause`. */
function mapBedrockError(error: unknown, modelId: string): unknown {
  return mapAwsError(error, {
    who: `bedrock ${modelId}`,
    service: 'Bedrock',
    throttled: BEDROCK_THROTTLED,
    transient: BEDROCK_TRANSIENT,
    late: (e, message) => {
      const status = e.$metadata?.httpStatusCode;
      if (
        BEDROCK_CONFIG.has(e.name) ||
        status === 401 ||
        status === 403 ||
        (e.name === 'ValidationException' && CONFIG_VALIDATION.test(e.message))
      )
        return new ModelConfigError(message, { cause: e });
      return undefined;
    },
  });
}
