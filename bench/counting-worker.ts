/**
 * The gateway as the sustained benchmark runs it (bench/e2e.mjs): the real Worker, with its D1
 * binding wrapped to count round trips (each one transaction) by where they come from: the
 * accept path (POST /webhooks/*) or the queue consumer. GET /__d1 reads the counts. Only
 * `npm run bench` builds this entry; the deployed Worker (src/index.ts) counts nothing.
 */
import type { Env, QueuedEvent } from "../src/env";
import worker from "../src/index";

/** wrangler.toml binds the rate limiter's Durable Object class: every entry point exports it. */
export { DestinationRateLimiter } from "../src/index";
import { faultyD1 } from "../test/faults";

const counts = { accept: 0, consumer: 0, other: 0 };

const counted = (env: Env, bucket: keyof typeof counts): Env => ({ ...env, DB: faultyD1(env.DB, () => undefined, () => counts[bucket]++) });

const handlers: ExportedHandler<Env, QueuedEvent> = worker;

export default {
  fetch(request, env, ctx) {
    const { pathname } = new URL(request.url);
    if (pathname === "/__d1") return Response.json(counts);
    return handlers.fetch!(request, counted(env, pathname.startsWith("/webhooks/") ? "accept" : "other"), ctx);
  },
  queue: (batch, env, ctx) => handlers.queue!(batch, counted(env, batch.queue === "edgehook-events" ? "consumer" : "other"), ctx),
  scheduled: (controller, env, ctx) => handlers.scheduled!(controller, env, ctx),
} satisfies ExportedHandler<Env, QueuedEvent>;
