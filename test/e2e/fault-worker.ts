/**
 * The gateway as the end-to-end harness runs it: the real Worker, with its D1, Queue and R2
 * bindings wrapped so the harness can make them fail or stall (POST /__faults). Only
 * `npm run test:e2e` builds this entry; the deployed Worker (src/index.ts) has no such switch.
 */
import type { Env, QueuedEvent } from "../../src/env";
import worker from "../../src/index";

/** wrangler.toml binds the rate limiter's Durable Object class: every entry point exports it. */
export { DestinationLane, DestinationRateLimiter } from "../../src/index";
import { breakingEventRows, faultyD1, faultyQueue, faultyR2, sleep } from "../faults";

interface Fault {
  fail: boolean;
  delayMs: number;
  /** D1: fault just the statements whose SQL contains this (one step of the write path); R2: just this operation (put, get, delete); all when absent. */
  match?: string;
}
/** poison: the consumer's read of about one event in 16 (by id) throws, its first two times. */
const faults: { d1: Fault; queue: Fault; r2: Fault; poison: boolean; injected: number; poisoned: number } = {
  d1: { fail: false, delayMs: 0 },
  r2: { fail: false, delayMs: 0 },
  queue: { fail: false, delayMs: 0 },
  poison: false,
  injected: 0,
  poisoned: 0,
};
const poisonings = new Map<string, number>();

function poisons(key: string): boolean {
  if (!faults.poison || !key.endsWith("0")) return false;
  const times = poisonings.get(key) ?? 0;
  if (times >= 2) return false;
  poisonings.set(key, times + 1);
  faults.poisoned++;
  return true;
}

async function gate(fault: Fault, what = ""): Promise<void> {
  if (fault.match && !what.includes(fault.match)) return;
  if (fault.delayMs) await sleep(fault.delayMs);
  if (fault.fail) {
    faults.injected++;
    throw new Error("injected fault");
  }
}

function withFaults(env: Env): Env {
  return {
    ...env,
    DB: faultyD1(env.DB, (sql) => gate(faults.d1, sql)),
    EVENTS_QUEUE: faultyQueue(env.EVENTS_QUEUE, () => gate(faults.queue)).queue,
    BODIES: faultyR2(env.BODIES, (operation) => gate(faults.r2, operation)).bucket,
  };
}

const handlers: ExportedHandler<Env, QueuedEvent> = worker;

export default {
  async fetch(request, env, ctx) {
    if (new URL(request.url).pathname === "/__faults") {
      if (request.method === "POST") Object.assign(faults, (await request.json()) as Partial<typeof faults>);
      return Response.json(faults);
    }
    return handlers.fetch!(request, withFaults(env), ctx);
  },
  queue: (batch, env, ctx) => {
    const faulty = withFaults(env);
    return handlers.queue!(batch, { ...faulty, DB: breakingEventRows(faulty.DB, poisons) }, ctx);
  },
  scheduled: (controller, env, ctx) => handlers.scheduled!(controller, env, ctx),
} satisfies ExportedHandler<Env, QueuedEvent>;
