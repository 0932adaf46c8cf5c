/**
 * The gateway as the sustained benchmark runs it (bench/e2e.mjs): the real Worker, with its D1
 * binding wrapped to count round trips (each one transaction) by where they come from: the
 * accept path (POST /webhooks/*) or the queue consumer. The consumer's time is measured too: its
 * invocations' wall time, and its D1 round trips' by what they do (storing and claiming the
 * batch's events, recording its rounds with their metrics counters, anything else), and its R2
 * calls (the bodies' puts, and reads for a message naming a stored event); local D1 and R2 run
 * in workerd's own process, so their wall time is mostly CPU spent on the event. GET /__d1 reads it all.
 * Every binding's billable operations are counted too (bench/usage.ts), for the storage and cost
 * benchmark (bench/storage.mjs): GET /__usage reads them with the bodies' bytes in R2, and
 * POST /__scheduled runs the cron once (it turns the search index on when SEARCH is "on").
 * Only `npm run bench` builds this entry; the deployed Worker (src/index.ts) counts nothing.
 */
import type { Env, QueuedEvent } from "../src/env";
import worker from "../src/index";
import { countedBatch, countedBucket, countedDataset, countedNamespace, countedQueue, countRows, usage } from "./usage";

/** wrangler.toml binds the rate limiter's Durable Object class: every entry point exports it. */
export { DestinationLane, DestinationRateLimiter } from "../src/index";

const counts = { accept: 0, consumer: 0, other: 0 };
/** Milliseconds: consumer invocations in all, their D1 round trips by kind, and their R2 calls. */
const consumerMs = { total: 0, storeAndClaim: 0, recordAndMetrics: 0, otherD1: 0, r2: 0 };

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
    usage.d1.statements += sql.length;
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
        if (prop === "run" || prop === "all") {
          return () => roundTrip([sql], async () => {
            const result = await target[prop]();
            countRows(result, [sql]);
            return result;
          });
        }
        // first() gives no meta: the same statement through all(), its first row (or that row's column) given back.
        if (prop === "first") {
          return (column?: string) => roundTrip([sql], async () => {
            const result = await target.all<Record<string, unknown>>();
            countRows(result, [sql]);
            const [row = null] = result.results;
            return column === undefined || row === null ? row : (row[column] ?? null);
          });
        }
        if (prop === "raw") throw new Error("raw() is not counted: count it here before the Worker uses it");
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
    batch: (list: D1PreparedStatement[]) => roundTrip(list.map((s) => sqlOf.get(s) ?? ""), async () => {
      const results = await db.batch(list.map((s) => statements.get(s) ?? s));
      countRows(results, list.map((s) => sqlOf.get(s) ?? ""));
      return results;
    }),
    exec: (sql: string) => db.exec(sql),
    withSession: () => {
      throw new Error("not used");
    },
    dump: () => db.dump(),
  } as unknown as D1Database;
}

const handlers: ExportedHandler<Env, QueuedEvent> = worker;

/**
 * The bucket with the time its calls are in flight added to consumerMs.r2 (puts, and gets for a
 * message that names a stored event): one invocation's puts run at once (a batch's bodies), so
 * the time counted is while at least one is pending, not each call's own (which would count the
 * batch's 25 parallel puts 25 times).
 */
function timedBucket(bucket: R2Bucket): R2Bucket {
  let inFlight = 0;
  let since = 0;
  return new Proxy(bucket, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        if (inFlight++ === 0) since = performance.now();
        const done = () => {
          if (--inFlight === 0) consumerMs.r2 += performance.now() - since;
        };
        let result: unknown;
        try {
          result = (value as (...a: unknown[]) => unknown).apply(target, args);
        } catch (err) {
          done();
          throw err;
        }
        // A method that answers at once (resumeMultipartUpload) is timed as such, and stays synchronous.
        if (typeof (result as PromiseLike<unknown> | null)?.then !== "function") {
          done();
          return result;
        }
        return Promise.resolve(result).finally(done);
      };
    },
  });
}

/** The Worker's bindings, each counted: D1 in `bucket`, the rest in `usage`; the consumer's R2 calls timed too. */
function countedEnv(env: Env, bucket: Bucket): Env {
  return {
    ...env,
    DB: counted(env.DB, bucket),
    BODIES: countedBucket(bucket === "consumer" ? timedBucket(env.BODIES) : env.BODIES),
    EVENTS_QUEUE: countedQueue(env.EVENTS_QUEUE),
    DEAD_LETTER_QUEUE: countedQueue(env.DEAD_LETTER_QUEUE),
    ...(env.ALERTS_QUEUE && { ALERTS_QUEUE: countedQueue(env.ALERTS_QUEUE) }),
    ...(env.RATE_LIMITER && { RATE_LIMITER: countedNamespace(env.RATE_LIMITER) }),
    ...(env.LANES && { LANES: countedNamespace(env.LANES) }),
    METRICS: countedDataset(env.METRICS),
  };
}

/** Runs one invocation with its wall time added to `usage`. */
async function timed<T>(work: () => T | Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await work();
  } finally {
    usage.invocationMs += performance.now() - started;
  }
}

/** The bodies in R2 (objects of their own and segments): objects and bytes, listed without counting (the benchmark's reading, not the Worker's). */
async function bodiesStored(bucket: R2Bucket): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let bytes = 0;
  for (const prefix of ["events/", "segments/"]) {
    let cursor: string | undefined;
    do {
      const page = await bucket.list({ prefix, cursor });
      objects += page.objects.length;
      bytes += page.objects.reduce((sum, object) => sum + object.size, 0);
      cursor = page.truncated ? page.cursor : undefined;
    } while (cursor);
  }
  return { objects, bytes };
}

export default {
  async fetch(request, env, ctx) {
    const { pathname } = new URL(request.url);
    if (pathname === "/__d1") return Response.json({ ...counts, consumerMs });
    if (pathname === "/__usage") return Response.json({ ...usage, bodies: await bodiesStored(env.BODIES) });
    if (pathname === "/__scheduled" && request.method === "POST") {
      await handlers.scheduled!({ cron: "*/5 * * * *", scheduledTime: Date.now(), noRetry() {} }, env, ctx);
      return new Response("ran");
    }
    const webhook = pathname.startsWith("/webhooks/");
    if (webhook) usage.invocations.webhooks++;
    else usage.invocations.otherFetch++;
    return timed(() => handlers.fetch!(request, countedEnv(env, webhook ? "accept" : "other"), ctx));
  },
  async queue(batch, env, ctx) {
    const events = batch.queue === "edgehook-events";
    usage.invocations.queue++;
    const started = performance.now();
    try {
      await timed(() => countedBatch(batch, (counted) => handlers.queue!(counted, countedEnv(env, events ? "consumer" : "other"), ctx) as Promise<void>));
    } finally {
      if (events) consumerMs.total += performance.now() - started;
    }
  },
  scheduled(controller, env, ctx) {
    usage.invocations.scheduled++;
    return timed(() => handlers.scheduled!(controller, countedEnv(env, "other"), ctx) as Promise<void>);
  },
} satisfies ExportedHandler<Env, QueuedEvent>;
