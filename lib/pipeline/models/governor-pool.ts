import type { PipelineConfig } from '../config.js';
import { type Clock, type GovernorLimits, RateGovernor } from './governor.js';

/** Options of a {@link GovernorPool}. */
export interface GovernorPoolOptions {
  /**
   * Whether every shard of a run calls from this process (the local engine) or each shard runs in
   * its own process (Lambda), where this process gets 1/`concurrency` of each model's quota.
   */
  readonly sharedByShards: boolean;
  /** The clock the governors wait on; tests pass a fake one. */
  readonly clock?: Clock;
}

/** One rate governor per model spec (and configuration) in this process. */
export class GovernorPool {
  private readonly governors = new Map<string, RateGovernor>();

  constructor(private readonly options: GovernorPoolOptions) {}

  /** The governor of a model under a run's configuration, made on first use. */
  get(spec: string, config: PipelineConfig): RateGovernor {
    const limits = this.limitsOf(spec, config);
    const id = JSON.stringify([spec, limits, config.retry]);
    let governor = this.governors.get(id);
    if (!governor) {
      governor = new RateGovernor(limits, config.retry, this.options.clock);
      this.governors.set(id, governor);
    }
    return governor;
  }

  /** This process's share of a model's quota. */
  limitsOf(spec: string, config: PipelineConfig): GovernorLimits {
    const configured = config.limits[spec] ?? {};
    const processes = this.options.sharedByShards ? 1 : config.concurrency;
    const share = (perMinute: number | undefined) =>
      perMinute === undefined ? undefined : perMinute / processes;
    return {
      requestsPerMinute: share(configured.requestsPerMinute),
      tokensPerMinute: share(configured.tokensPerMinute),
      maxConcurrency:
        configured.maxConcurrency === undefined
          ? config.callConcurrency * (this.options.sharedByShards ? config.concurrency : 1)
          : Math.max(1, Math.floor(configured.maxConcurrency / processes)),
    };
  }
}
