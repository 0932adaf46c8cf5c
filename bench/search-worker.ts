/**
 * The gateway as bench/search.mjs runs it: the real Worker, plus routes that do D1 work and time
 * it from inside the Worker (a Worker's clock moves only across I/O, so these times are D1's,
 * without HTTP), that switch the search index's triggers (dropped, idle, indexing), and that read
 * back what the seed made. Only the benchmark builds this entry; the deployed Worker has no such routes.
 */
import { eventFilter } from "../src/admin/operations";
import type { Env, QueuedEvent } from "../src/env";
import worker from "../src/index";

/** wrangler.toml binds the rate limiter's Durable Object class: every entry point exports it. */
export { DestinationLane, DestinationRateLimiter } from "../src/index";
import { eventKey, listEvents, storeEvent } from "../src/store/events";
import { purgeOlderThan } from "../src/store/retention";
import { bodyWriter } from "../src/store/bodies";
import { followSearchSetting, matchExpression } from "../src/store/search";

const handlers: ExportedHandler<Env, QueuedEvent> = worker;

/** Payload templates with placeholders (see bench/search.mjs) that the seed fills per event. */
interface Templates {
  seismic: string;
  zuddl: string;
}

/** Words of session and content titles: two per title, so each word is in about 10% of events. */
const TITLE_WORDS = ["pipeline", "onboarding", "renewal", "security", "pricing", "roadmap", "kickoff", "webinar", "training", "quarterly",
  "partner", "launch", "analytics", "compliance", "migration", "strategy", "workshop", "summit", "enablement", "forecast"];

/**
 * Events `from`..`to`, `perTransaction` to a statement (one D1 transaction each), generated in SQL:
 * a UUID-like id, content id and session id, a unique email and a title per event. Received in
 * 2020, one second apart, and delivered, so the retention purge may take them.
 */
async function seed(db: D1Database, templates: Templates, from: number, to: number, perTransaction: number): Promise<void> {
  const words = TITLE_WORDS.map((w, k) => `(${k}, '${w}')`).join(", ");
  const uuid = (salt: number) =>
    `printf('%08x-%04x-4%03x-%04x-%012x', (i * 2654435761 + ${salt}) % 4294967296, (i * 40503 + ${salt}) % 65536, (i + ${salt}) % 4096, 32768 + (i * 7 + ${salt}) % 16384, (i * 1103515245 + ${salt * 12345}) % 281474976710656)`;
  const statement = db.prepare(
    `WITH RECURSIVE n(i) AS (SELECT CAST(?1 AS INTEGER) UNION ALL SELECT i + 1 FROM n WHERE i < ?2),
       words(k, w) AS (VALUES ${words}),
       e AS (SELECT i, ${uuid(1)} AS event_id, ${uuid(2)} AS content_id, ${uuid(3)} AS session_id,
                    printf('user%d.%s@company%d.example', i, (SELECT w FROM words WHERE k = i % 20), i % 500) AS email,
                    (SELECT w FROM words WHERE k = i % 20) || ' ' || (SELECT w FROM words WHERE k = (i / 20) % 20) || ' ' || (i % 1000) AS title
             FROM n)
     INSERT INTO events (key, provider, event_id, type, known_type, tenant, received_at, verified_with, content_type, body, status, enqueued_at)
     SELECT printf('evt_seed%08d', i), CASE i % 2 WHEN 0 THEN 'seismic' ELSE 'zuddl' END, event_id,
            CASE i % 2 WHEN 0 THEN 'livesend-session-summary-v3' ELSE 'TIME_SPENT_IN_SESSION' END, 1, printf('tenant-%d', i % 50),
            1577836800000 + i * 1000, 'current', 'application/json',
            replace(replace(replace(replace(replace(CASE i % 2 WHEN 0 THEN ?3 ELSE ?4 END,
              '__EVENT_ID__', event_id), '__CONTENT_ID__', content_id), '__SESSION_ID__', session_id), '__EMAIL__', email), '__TITLE__', title),
            'delivered', 1577836800000 + i * 1000
     FROM e`,
  );
  for (let first = from; first <= to; first += perTransaction) {
    await statement.bind(first, Math.min(first + perTransaction - 1, to), templates.seismic, templates.zuddl).run();
  }
}

/** `count` new events stored one by one exactly as the request path stores them (step 1 of the write order): ms each. */
async function writes(env: Env, template: string, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const eventId = crypto.randomUUID();
    const body = template.replaceAll("__EVENT_ID__", eventId);
    const key = await eventKey("seismic", "livesend-session-summary-v3", eventId);
    const started = performance.now();
    await storeEvent(env.DB, bodyWriter(env), {
      key, provider: "seismic", source: "seismic", eventId, type: "livesend-session-summary-v3", knownType: true, tenant: "tenant-bench", occurredAt: null,
      receivedAt: Date.now(), verifiedWith: "current", contentType: "application/json", body, forced: false,
    });
    times.push(performance.now() - started);
  }
  return times;
}

/**
 * Drops the triggers on events (the schema before migration 0008) and answers their SQL, which
 * `/__bench/triggers/create` takes back.
 */
async function dropTriggers(db: D1Database): Promise<string[]> {
  const { results } = await db.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'").all<{ name: string; sql: string }>();
  for (const { name } of results) await db.prepare(`DROP TRIGGER "${name}"`).run();
  return results.map((r) => r.sql);
}

async function timed<T>(work: () => Promise<T>): Promise<{ ms: number; result: T }> {
  const started = performance.now();
  const result = await work();
  return { ms: performance.now() - started, result };
}

/** listEvents as GET /admin/events runs it, `runs` times: the median ms, and how many events it returned. */
async function listTimes(env: Env, query: Record<string, string>, runs: number): Promise<{ medianMs: number; returned: number }> {
  const times: number[] = [];
  let returned = 0;
  for (let i = 0; i < runs; i++) {
    const { ms, result } = await timed(() => listEvents(env.DB, eventFilter(env, query), 50, query.cursor ?? null));
    times.push(ms);
    returned = result.events.length;
  }
  return { medianMs: times.sort((a, b) => a - b)[Math.floor(runs / 2)]!, returned };
}

export default {
  async fetch(request, env, ctx) {
    const { pathname, searchParams } = new URL(request.url);
    const number = (name: string) => Number(searchParams.get(name));
    const db = env.DB;
    switch (`${request.method} ${pathname}`) {
      case "POST /__bench/seed": {
        const templates = (await request.json()) as Templates;
        return Response.json(await timed(() => seed(db, templates, number("from"), number("to"), number("perTransaction"))));
      }
      case "POST /__bench/writes": {
        const template = await request.text();
        return Response.json(await timed(() => writes(env, template, number("count"))));
      }
      case "POST /__bench/purge":
        return Response.json(await timed(() => purgeOlderThan(db, env.BODIES, number("cutoff"), { batchSize: number("batch"), maxBatches: 1 })));
      case "POST /__bench/triggers/drop":
        return Response.json(await dropTriggers(db));
      case "POST /__bench/triggers/create":
        for (const sql of (await request.json()) as string[]) await db.prepare(sql).run();
        return Response.json({ ok: true });
      case "POST /__bench/enabled":
        // What the triggers check; unlike SEARCH, leaves the index as it is (rows written meanwhile are not indexed).
        await db.prepare("UPDATE search_index SET enabled = ?1").bind(number("value")).run();
        return Response.json({ ok: true });
      case "POST /__bench/build":
        // The cron with SEARCH turned off, then on, run after run until the index is complete.
        return Response.json(
          await timed(async () => {
            await followSearchSetting(db, env.BODIES, false);
            let runs = 1;
            while ((await followSearchSetting(db, env.BODIES, true)).search !== "ready") runs++;
            return runs;
          }),
        );
      case "GET /__bench/list":
        return Response.json(await listTimes(env, Object.fromEntries(searchParams), number("runs")));
      case "GET /__bench/event": {
        const row = await db.prepare("SELECT body FROM events WHERE key = printf('evt_seed%08d', ?1)").bind(number("i")).first<{ body: string }>();
        return new Response(row?.body ?? null, { status: row ? 200 : 404 });
      }
      case "GET /__bench/stats": {
        const events = await db.prepare("SELECT count(*) AS n FROM events").first<{ n: number }>();
        const q = searchParams.get("q");
        const matches = q ? await db.prepare("SELECT count(*) AS n FROM events_search WHERE events_search MATCH ?1").bind(matchExpression(q)).first<{ n: number }>() : null;
        const index = await db.prepare("SELECT sum(length(block)) AS n FROM events_search_data").first<{ n: number }>();
        return Response.json({ events: events?.n, matches: matches?.n ?? null, indexBytes: index?.n });
      }
      default:
        return handlers.fetch!(request, env, ctx);
    }
  },
  queue: (batch, env, ctx) => handlers.queue!(batch, env, ctx),
  scheduled: (controller, env, ctx) => handlers.scheduled!(controller, env, ctx),
} satisfies ExportedHandler<Env, QueuedEvent>;
