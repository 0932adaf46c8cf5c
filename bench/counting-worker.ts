/**
 * The gateway as the sustained benchmark runs it (bench/e2e.mjs): the real Worker, with its D1
 * binding wrapped to count round trips (each one transaction) by where they come from: the
 * accept path (POST /webhooks/*) or the queue consumer. The consumer's time is measured too: its
 * invocations' wall time, and its D1 round trips' by what they do (storing and claiming the
 * batch's events, recording its rounds with their metrics counters, anything else); local D1 runs
 * in workerd's own process, so its wall time is CPU spent on the event. GET /__d1 reads it all.
 * Only `npm run bench` builds this entry; the deployed Worker (src/index.ts) counts nothing.
 */
import type { Env, QueuedEvent } from "../src/env";
import worker from "../src/index";

/** wrangler.toml binds the rate limiter's Durable Object class: every entry point exports it. */
export { DestinationLane, DestinationRateLimiter } from "../src/index";

const counts = { accept: 0, consumer: 0, other: 0 };
/** Milliseconds: consumer invocations in all, and their D1 round trips by kind. */
const consumerMs = { total: 0, storeAndClaim: 0, recordAndMetrics: 0, otherD1: 0 };

type Bucket = keyof typeof counts;

/** What a consumer round trip does, from its statements' SQL. */
function kindOf(sql: string[]): "storeAndClaim" | "recordAndMetrics" | "otherD1" {
  if (sql.some((s) => s.includes("INSERT INTO events") || s.includes("SET lease_by = ?2"))) return "storeAndClaim";
  if (sql.some((s) => /INTO deliveries|UPDATE deliveries|UPDATE events\s+SET\s+status/.test(s))) return "recordAndMetrics";
  return "otherD1";
}

/** D1 with each round trip counted in `bucket` and, for the consumer, timed by kind. */
function counted(db: D1Database, bucket: Bucket): D1Database {
  const sqlOf = new WeakMap<D1PreparedStatement, string>();
  const roundTrip = async <T>(sql: string[], work: () => Promise<T>): Promise<T> => {
    counts[bucket]++;
    const started = performance.now();
    try {
      return await work();
    } finally {
      if (bucket === "consumer") consumerMs[kindOf(sql)] += performance.now() - started;
    }
  };
  const wrap = (statement: D1PreparedStatement, sql: string): D1PreparedStatement => {
    const proxy = new Proxy(statement, {
      get(target, prop) {
        if (prop === "bind") return (...values: unknown[]) => wrap(target.bind(...values), sql);
        if (prop === "run" || prop === "first" || prop === "all" || prop === "raw") {
          return (...args: unknown[]) => roundTrip([sql], () => (target[prop] as (...a: unknown[]) => Promise<unknown>).apply(target, args));
        }
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    sqlOf.set(proxy, sql);
    statements.set(proxy, statement);
    return proxy;
  };
  const statements = new WeakMap<D1PreparedStatement, D1PreparedStatement>();
  return {
    prepare: (sql: string) => wrap(db.prepare(sql), sql),
    batch: (list: D1PreparedStatement[]) => roundTrip(list.map((s) => sqlOf.get(s) ?? ""), () => db.batch(list.map((s) => statements.get(s) ?? s))),
    exec: (sql: string) => db.exec(sql),
    withSession: () => {
      throw new Error("not used");
    },
    dump: () => db.dump(),
  } as unknown as D1Database;
}

const handlers: ExportedHandler<Env, QueuedEvent> = worker;

export default {
  fetch(request, env, ctx) {
    const { pathname } = new URL(request.url);
    if (pathname === "/__d1") return Response.json({ ...counts, consumerMs });
    return handlers.fetch!(request, { ...env, DB: counted(env.DB, pathname.startsWith("/webhooks/") ? "accept" : "other") }, ctx);
  },
  async queue(batch, env, ctx) {
    const events = batch.queue === "edgehook-events";
    const started = performance.now();
    try {
      await handlers.queue!(batch, { ...env, DB: counted(env.DB, events ? "consumer" : "other") }, ctx);
    } finally {
      if (events) consumerMs.total += performance.now() - started;
    }
  },
  scheduled: (controller, env, ctx) => handlers.scheduled!(controller, env, ctx),
} satisfies ExportedHandler<Env, QueuedEvent>;
