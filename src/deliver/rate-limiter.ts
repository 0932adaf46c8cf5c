/**
 * Each destination's rate limit (`rate_per_second`), held by one Durable Object per destination:
 * one instance in the world per name, single-threaded, so every consumer invocation in every
 * isolate draws its forwards from the same schedule.
 *
 * The schedule is a virtual clock (GCRA without burst): forwards start 1/rate apart. A consumer
 * batch asks once for all its events. An event whose slot is within `horizonMs` goes now (the
 * batch waits for the slot); a later one is booked for that event, up to `bookAheadMs` ahead, and
 * its message comes back at its slot and is given the same slot again (unless it is late: then it
 * is booked anew, never sent in a burst): a deferred event uses one
 * queue retry, not one per batch that passes while it waits, and a backlog drains at the rate in
 * arrival order. Bookings live in memory: if the object is evicted (idle), the schedule starts
 * again from now and a returning event is booked anew. A booking never claimed (its message was
 * lost, or its delivery finished meanwhile) is capacity lost, never extra, and forgotten a minute
 * after its slot.
 */
import { DurableObject } from "cloudflare:workers";
import type { Env, RateLimiterApi, Reservation } from "../env";

const FORGET_AFTER_MS = 60_000;

export class DestinationRateLimiter extends DurableObject<Env> implements RateLimiterApi {
  private nextFreeAt = 0;
  private readonly booked = new Map<string, number>();
  private lastSwept = 0;

  reserve(keys: string[], perSecond: number, horizonMs: number, bookAheadMs: number): Reservation[] {
    const now = Date.now();
    this.forgetStale(now);
    const spacing = 1000 / perSecond;
    return keys.map((key) => {
      let at = this.booked.get(key);
      // A booking whose message came back late is not used late (that would be a burst): booked again.
      if (at !== undefined && at < now - spacing) at = undefined;
      if (at === undefined) {
        const next = Math.max(now, this.nextFreeAt);
        if (next > now + bookAheadMs) return { at: null };
        at = Math.round(next);
        this.nextFreeAt = next + spacing;
      }
      if (at <= now + horizonMs) {
        this.booked.delete(key);
        return { at, go: true };
      }
      this.booked.set(key, at);
      return { at, go: false };
    });
  }

  private forgetStale(now: number): void {
    if (now - this.lastSwept < FORGET_AFTER_MS) return;
    this.lastSwept = now;
    for (const [key, at] of this.booked) if (at < now - FORGET_AFTER_MS) this.booked.delete(key);
  }
}
