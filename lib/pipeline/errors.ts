/**
 * Named errors. Each sets `name` so a Step Functions `Retry` or `Catch` can match it, and the CLI
 * can print a one-line message.
 */

/** The model provider throttled the request (HTTP 429); retry later with backoff. */
export class ModelThrottledError extends Error {
  override name = 'ModelThrottledError';
}

/** A transient provider failure (5xx, timeout, connection reset); safe to retry. */
export class ModelTransientError extends Error {
  override name = 'ModelTransientError';
}

/** The model cannot be used as configured (unknown spec, missing weights, no access). Not retried. */
export class ModelConfigError extends Error {
  override name = 'ModelConfigError';
}

/** A judge's structured answer did not match its schema. Carries the usage the call still cost. */
export class JudgeAnswerError extends Error {
  override name = 'JudgeAnswerError';
  constructor(
    message: string,
    readonly usage: { inputTokens: number; outputTokens: number },
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The model refused or its output was blocked by a content filter. */
export class ModelRefusedError extends Error {
  override name = 'ModelRefusedError';
  constructor(
    message: string,
    readonly usage: { inputTokens: number; outputTokens: number },
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The pipeline configuration is invalid. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** The input as a whole cannot be read (missing, unreadable, no such column). */
export class InputError extends Error {
  override name = 'InputError';
}

/** Records went missing or were counted twice between stages. */
export class AccountingError extends Error {
  override name = 'AccountingError';
}

/** A store key that would leave the store's root. */
export class StoreKeyInvalidError extends Error {
  override name = 'StoreKeyInvalidError';
}

/** The local engine met a definition it cannot run (no state machine, an unknown function). */
export class LocalEngineError extends Error {
  override name = 'LocalEngineError';
}

/** The store failed in a way that may pass (a 5xx, SlowDown, a dropped connection); retry the task. */
export class StoreTransientError extends Error {
  override name = 'StoreTransientError';
}

/** A key the pipeline needs is absent from the store. */
export class StoreKeyMissingError extends Error {
  override name = 'StoreKeyMissingError';
}

/** The provider rejected this one request (too long, malformed); the record is rejected, the run goes on. */
export class ModelRequestError extends Error {
  override name = 'ModelRequestError';
}

/** Bedrock refused a batch job for good (bad input, no access, unsupported model): its records go on-demand. */
export class BatchSubmitError extends Error {
  override name = 'BatchSubmitError';
}

/** A batch job had already ended when the workflow submitted it again: nothing will release the wait, so join it now. */
export class BatchJobEndedError extends Error {
  override name = 'BatchJobEndedError';
}

/**
 * A paid model call would take the run past its budget (`run --max-budget`). The call is not made; the
 * execution stops, and what it wrote stays, to resume with a higher budget.
 */
export class BudgetExceededError extends Error {
  override name = 'BudgetExceededError';
}
