/**
 * What a transform adds to a forward, measured inside the Worker as `npm run bench` runs it
 * (bench/e2e.mjs, under wrangler dev): GET /__transform-cost?samples=N times N forwards of the
 * Zuddl sample to DESTINATIONS' `plain` (the original body) and `shaped` (transforms/crm-contact.js,
 * then the forward of its body), and the transform alone, cold (new code, so a new isolate: its
 * source with a unique comment) and warm. Everything else is the real gateway (src/index.ts).
 */
import type { Env, QueuedEvent } from "../src/env";
import worker from "../src/index";
import { loadDestinations, type Destination } from "../src/deliver/destinations";
import { forward } from "../src/deliver/forward";
import { runTransform, transformLimits, type TransformEvent } from "../src/deliver/transform";
import { transformSource } from "../src/deliver/transform-source";
import zuddlSample from "../test/fixtures/zuddl-time-spent-in-session.json";

/** wrangler.toml binds the rate limiter's Durable Object class: every entry point exports it. */
export { DestinationLane, DestinationRateLimiter } from "../src/index";

const handlers: ExportedHandler<Env, QueuedEvent> = worker;
const TRANSFORM = "crm-contact";

const event: TransformEvent = {
  provider: "zuddl", source: "zuddl", type: zuddlSample.action, eventId: zuddlSample.actionId, tenant: zuddlSample.event.organizationId,
  occurredAt: zuddlSample.actionCreatedAt, receivedAt: new Date().toISOString(), payload: zuddlSample,
};
const body = JSON.stringify(zuddlSample);

async function timed(run: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await run();
  return performance.now() - started;
}

async function cost(env: Env, samples: number) {
  const config = loadDestinations(env);
  const named = (name: string): Destination => {
    const destination = config.ok && config.destinations.find((d) => d.name === name);
    if (!destination) throw new Error(`DESTINATIONS must name ${name}`);
    return destination;
  };
  const plain = named("plain");
  const shaped = named("shaped");
  const source = transformSource(TRANSFORM);
  if (!env.LOADER || source === null) throw new Error("needs the LOADER binding and transforms/crm-contact.js");
  const loader = env.LOADER;
  const limits = transformLimits(env);
  const transform = (code: string) => runTransform(loader, { destination: shaped.name, name: TRANSFORM, source: code }, event, limits);
  const forwarded = (destination: Destination, text: string) => forward({ key: `bench-${crypto.randomUUID()}`, provider: "zuddl", type: event.type, contentType: "application/json", body: text }, destination);
  const figures = { plainMs: [] as number[], shapedColdMs: [] as number[], shapedWarmMs: [] as number[], transformColdMs: [] as number[], transformWarmMs: [] as number[] };
  for (let i = 0; i < samples; i++) {
    // Cold: code no isolate has run yet (the Worker Loader keys isolates by the code's hash).
    const fresh = `${source}\n// ${crypto.randomUUID()}\n`;
    figures.transformColdMs.push(await timed(() => transform(fresh)));
    figures.transformWarmMs.push(await timed(() => transform(source)));
    figures.plainMs.push(await timed(() => forwarded(plain, body)));
    const coldFresh = `${source}\n// ${crypto.randomUUID()}\n`;
    figures.shapedColdMs.push(await timed(async () => {
      const result = await transform(coldFresh);
      if (result.outcome === "body") await forwarded(shaped, result.body);
    }));
    figures.shapedWarmMs.push(await timed(async () => {
      const result = await transform(source);
      if (result.outcome === "body") await forwarded(shaped, result.body);
    }));
  }
  return figures;
}

export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    if (url.pathname === "/__transform-cost") return Response.json(await cost(env, Number(url.searchParams.get("samples") ?? 20)));
    return handlers.fetch!(request, env, ctx);
  },
  queue: (batch, env, ctx) => handlers.queue!(batch, env, ctx),
  scheduled: (controller, env, ctx) => handlers.scheduled!(controller, env, ctx),
} satisfies ExportedHandler<Env, QueuedEvent>;
