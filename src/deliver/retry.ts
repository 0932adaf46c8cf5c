/**
 * When a failed delivery is tried again, and when it gives up: the Worker's vars as one policy
 * (with the lane budget, the time past which a forward moves its destination to a lane of its own),
 * and exponential backoff with jitter. Shared by the consumer's rounds and the lanes.
 */
import { numberVar, type Env } from "../env";


export const DEFAULT_MAX_ATTEMPTS = 8;

export const DEFAULT_RETRY_BASE_SECONDS = 10;

export const DEFAULT_RETRY_MAX_SECONDS = 3_600;

/** A forward running this long moves its destination to its lane: about 10× a healthy receiver's answer. */
export const DEFAULT_LANE_BUDGET_MS = 500;

export interface RetryPolicy {
  maxAttempts: number;
  baseSeconds: number;
  maxSeconds: number;
  /** A forward that takes this long moves its destination to a lane of its own (deliver/lane.ts). */
  laneBudgetMs: number;
}

/** The delivery settings from the Worker's vars, shared by the consumer and the lanes. */
export function retryPolicy(env: Env): RetryPolicy {
  return {
    maxAttempts: numberVar(env.MAX_DELIVERY_ATTEMPTS, DEFAULT_MAX_ATTEMPTS),
    baseSeconds: numberVar(env.RETRY_BASE_SECONDS, DEFAULT_RETRY_BASE_SECONDS),
    maxSeconds: numberVar(env.RETRY_MAX_SECONDS, DEFAULT_RETRY_MAX_SECONDS),
    // Without the lanes' binding there is nowhere to move a destination to: no forward is over budget.
    laneBudgetMs: env.LANES ? numberVar(env.LANE_BUDGET_MS, DEFAULT_LANE_BUDGET_MS) : Infinity,
  };
}

/** Exponential backoff with jitter: half the step fixed, half random, so retries spread out. */
export function backoffSeconds(attempt: number, policy: Pick<RetryPolicy, "baseSeconds" | "maxSeconds">): number {
  const step = Math.min(policy.maxSeconds, policy.baseSeconds * 2 ** Math.max(0, attempt - 1));
  return Math.ceil(step / 2 + Math.random() * (step / 2));
}
