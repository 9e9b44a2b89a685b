import { ModelConfigError, ModelRequestError, ModelThrottledError, ModelTransientError } from '../errors.js';
import { sdkErrorKind } from '../sdk-errors.js';

/** Socket and HTTP/2 failures that pass on their own: a dropped, refused or reset connection. */
const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ETIMEDOUT',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'EAI_AGAIN',
  'ERR_HTTP2_STREAM_ERROR',
  'ERR_HTTP2_SESSION_ERROR',
  'ERR_HTTP2_GOAWAY_SESSION',
  'ERR_HTTP2_STREAM_CANCEL',
]);

// A daily token quota comes back as ServiceQuotaExceededException (HTTP 400): waiting is the only cure.
export const BEDROCK_THROTTLED = new Set([
  'ThrottlingException',
  'TooManyRequestsException',
  'ServiceQuotaExceededException',
]);
// ModelNotReadyException (HTTP 429) is an imported model scaled to zero and loading, not a quota.
export const BEDROCK_TRANSIENT = new Set([
  'ServiceUnavailableException',
  'InternalServerException',
  'ModelNotReadyException',
  'ModelTimeoutException',
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
]);
/** Bedrock error names that mean the model cannot be used as configured. */
export const BEDROCK_CONFIG = new Set([
  'AccessDeniedException',
  'ResourceNotFoundException',
  'UnrecognizedClientException',
]);

/** An AWS SDK error as the mapping reads it. */
export type AwsError = Error & {
  readonly code?: unknown;
  readonly $metadata?: { readonly httpStatusCode?: number };
  readonly originalStatusCode?: number;
  readonly OriginalStatusCode?: number;
};

/** How one model service's errors read: the names it uses, and its own readings before and after the shared ones. */
export interface AwsErrorRules {
  /** The service and the model or endpoint, e.g. `bedrock anthropic.claude-3-haiku`, for the message. */
  readonly who: string;
  /** The service's name in the credentials hint: Bedrock, SageMaker. */
  readonly service: string;
  /** Error names that are a quota: waiting is the cure, and concurrency comes down. */
  readonly throttled: ReadonlySet<string>;
  /**
   * Error names that pass on their own. Checked before any 429 rule: a model still loading answers
   * 429 too, and is not a quota.
   */
  readonly transient: ReadonlySet<string>;
  /** The service's own reading, after the transient names: a container's status, say. */
  readonly early?: (error: AwsError, message: string) => Error | undefined;
  /** The service's reading of a client error (4xx), before it becomes a ModelRequestError. */
  readonly late?: (error: AwsError, message: string) => Error | undefined;
}

/**
 * Maps an AWS SDK or network error to the pipeline's named errors, keeping the original as `cause`:
 * credentials and region missing, and what `late` says, are ModelConfigError; quotas
 * ModelThrottledError; 5xx, timeouts and dropped connections ModelTransientError; any other 4xx
 * ModelRequestError. Anything else is returned as it is.
 */
export function mapAwsError(error: unknown, rules: AwsErrorRules): unknown {
  if (!(error instanceof Error)) return error;
  const e = error as AwsError;
  const { name } = e;
  const status = e.$metadata?.httpStatusCode;
  const message = `${rules.who}: ${name}: ${e.message}`;
  const options = { cause: error };
  // The SDK's own setup errors: no call can succeed until the environment is fixed.
  if (name === 'CredentialsProviderError' || /^Region is missing/.test(e.message))
    return new ModelConfigError(
      `${message} (${rules.service} needs AWS credentials and a region: AWS_PROFILE or AWS_ACCESS_KEY_ID, and AWS_REGION)`,
      options,
    );
  if (rules.transient.has(name)) return new ModelTransientError(message, options);
  const early = rules.early?.(e, message);
  if (early) return early;
  const kind = sdkErrorKind(error);
  if (rules.throttled.has(name) || status === 429 || kind === 'throttling')
    return new ModelThrottledError(message, options);
  if (
    kind === 'transient' ||
    (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) ||
    NETWORK_CODES.has(name) ||
    (status !== undefined && status >= 500)
  )
    return new ModelTransientError(message, options);
  const late = rules.late?.(e, message);
  if (late) return late;
  if (name === 'ValidationException' || (status !== undefined && status >= 400))
    return new ModelRequestError(message, options);
  return error;
}

/**
 * A container's own status behind a model error (HTTP 424): a busy container is throttled, one that
 * rejects the request a request error, anything else (or none: it did not answer) transient.
 */
export function containerError(original: number | undefined, message: string, cause: Error): Error {
  if (original === 429) return new ModelThrottledError(message, { cause });
  if (original !== undefined && original >= 400 && original < 500 && original !== 408 && original !== 424)
    return new ModelRequestError(message, { cause });
  return new ModelTransientError(message, { cause });
}
