/**
 * Each destination's rate limit (`rate_per_second`), held by one Durable Object per destination:
 * one instance in the world per name, single-threaded, so every consumer invocation in every
 * isolate draws its forwards from the same schedule.
 *
 * The schedule is a virtual clock (GCRA without burst): forwards are spaced 1/rate apart, and a
 * caller reserves the next free start times up to `horizonMs` ahead, then waits until each before
 * forwarding. What does not fit is deferred by the caller (no attempt used). The clock lives in
 * memory: if the object is evicted (idle) the schedule starts again from now, which is what an
 * idle destination's schedule would say anyway.
 */
import { DurableObject } from "cloudflare:workers";
import type { Env, RateLimiterApi, Reservation } from "../env";

export class DestinationRateLimiter extends DurableObject<Env> implements RateLimiterApi {
  private nextFreeAt = 0;

  reserve(count: number, perSecond: number, horizonMs: number): Reservation {
    const now = Date.now();
    const spacing = 1000 / perSecond;
    const slots: number[] = [];
    let next = Math.max(now, this.nextFreeAt);
    while (slots.length < count && next <= now + horizonMs) {
      slots.push(Math.round(next));
      next += spacing;
    }
    this.nextFreeAt = next;
    return { slots, nextFreeAt: Math.ceil(next) };
  }
}
