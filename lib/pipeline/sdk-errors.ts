import { isServerError, isThrottlingError, isTransientError } from '@smithy/core/retry';

/**
 * The AWS SDK's own reading of an error, since the SDK's retries are ours to make: throttling (429s and
 * the throttling error codes) or something that may pass on its own (a 5xx, a timeout, a dropped or
 * refused connection, a DNS failure, a clock skew, anywhere in the error's chain of causes).
 */
export function sdkErrorKind(error: unknown): 'throttling' | 'transient' | undefined {
  if (!(error instanceof Error)) return undefined;
  const e = error as Parameters<typeof isTransientError>[0];
  if (isThrottlingError(e)) return 'throttling';
  if (isTransientError(e) || isServerError(e)) return 'transient';
  return undefined;
}
