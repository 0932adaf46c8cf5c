import { Hono } from "hono";
import type { AppEnv } from "../app";
import { loadDestinations, route, type Destination } from "../deliver/destinations";
import type { Env } from "../env";
import { HttpError, unavailable } from "../errors";
import {
  DELIVERY_STATUSES, getAttempts, getDeliveries, listDeliveries, resetStatements, stats, type AttemptRow, type DeliveryRow,
} from "../store/deliveries";
import { getEvent, listEvents, type EventRow } from "../store/events";
import { adminAuth } from "./auth";

const MAX_PAGE = 200;
/** Deliveries one bulk replay call resets and re-enqueues; call again while `more` is true. */
const BULK_REPLAY_LIMIT = 100;
const DAY_MS = 86_400_000;

/** The operator API: events, deliveries, replays and stats, behind the admin bearer token. */
export const adminRoutes = new Hono<AppEnv>();
adminRoutes.use("*", adminAuth());

adminRoutes.get("/events", async (c) => {
  const query = c.req.query();
  const page = await listEvents(
    c.env.DB,
    {
      provider: query.provider,
      type: query.type,
      status: query.status,
      tenant: query.tenant,
      eventId: query.eventId,
      since: timeParam(query.since, "since"),
      until: timeParam(query.until, "until"),
    },
    limitParam(query.limit),
    query.cursor ?? null,
  );
  return c.json({ events: page.events.map(eventView), nextCursor: page.nextCursor });
});

adminRoutes.get("/events/:id", async (c) => {
  const row = await requireEvent(c.env, c.req.param("id"));
  const [deliveries, attempts] = await Promise.all([getDeliveries(c.env.DB, row.key), getAttempts(c.env.DB, row.key)]);
  return c.json({ event: { ...eventView(row), deliveries: deliveries.map((d) => deliveryView(d, attempts)) } });
});

adminRoutes.post("/events/:id/replay", async (c) => {
  const row = await requireEvent(c.env, c.req.param("id"));
  const destinations = configuredDestinations(c.env);
  const named = c.req.query("destination");
  let targets: string[];
  if (named) {
    if (!destinations.some((d) => d.name === named)) throw new HttpError(404, "unknown_destination", `no destination named "${named}"`);
    targets = [named];
  } else {
    targets = route(destinations, { provider: row.provider, type: row.type, envelope: JSON.parse(row.body) }).map((d) => d.name);
  }
  if (targets.length) await replay(c.env, [{ eventKey: row.key, destinations: targets }]);
  return c.json({ id: row.key, replayed: targets }, 202);
});

adminRoutes.get("/deliveries", async (c) => {
  const filter = deliveryFilter(c.req.query());
  const limit = limitParam(c.req.query("limit"));
  const rows = await listDeliveries(c.env.DB, filter, limit + 1, deliveryCursor(c.req.query("cursor")));
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return c.json({
    deliveries: page.map((d) => deliveryView(d)),
    nextCursor: rows.length > limit && last ? btoa(JSON.stringify([last.updated_at, last.event_key, last.destination])) : null,
  });
});

adminRoutes.post("/replay", async (c) => {
  const filter = deliveryFilter({ status: "dead", ...c.req.query() });
  configuredDestinations(c.env);
  const rows = await listDeliveries(c.env.DB, filter, BULK_REPLAY_LIMIT, null);
  const byEvent = new Map<string, string[]>();
  for (const row of rows) byEvent.set(row.event_key, [...(byEvent.get(row.event_key) ?? []), row.destination]);
  const messages = [...byEvent].map(([eventKey, destinations]) => ({ eventKey, destinations }));
  if (messages.length) await replay(c.env, messages);
  return c.json({ replayed: rows.length, events: messages.length, more: rows.length === BULK_REPLAY_LIMIT }, 202);
});

adminRoutes.get("/stats", async (c) => {
  const until = timeParam(c.req.query("until"), "until") ?? Date.now();
  const since = timeParam(c.req.query("since"), "since") ?? until - DAY_MS;
  return c.json({ since: new Date(since).toISOString(), until: new Date(until).toISOString(), ...(await stats(c.env.DB, since, until)) });
});

adminRoutes.get("/destinations", (c) => {
  const config = loadDestinations(c.env);
  if (!config.ok) return c.json({ valid: false, errors: config.errors });
  return c.json({ valid: true, destinations: config.destinations.map((d) => d.config) });
});

async function requireEvent(env: Env, key: string): Promise<EventRow> {
  const row = await getEvent(env.DB, key);
  if (!row) throw new HttpError(404, "event_not_found", "no event with that id");
  return row;
}

function configuredDestinations(env: Env): Destination[] {
  const config = loadDestinations(env);
  if (!config.ok) throw unavailable("invalid_destinations", `DESTINATIONS is invalid: ${config.errors.join("; ")}`, 60);
  return config.destinations;
}

/** Makes the deliveries due again, then enqueues them; a 503 means "replay again". */
async function replay(env: Env, messages: { eventKey: string; destinations: string[] }[]): Promise<void> {
  const now = Date.now();
  await env.DB.batch(messages.flatMap((m) => resetStatements(env.DB, m.eventKey, m.destinations, now)));
  try {
    await env.EVENTS_QUEUE.sendBatch(messages.map((body) => ({ body, contentType: "json" as const })));
  } catch {
    throw unavailable("queue_unavailable", "deliveries were reset to pending but could not be enqueued; replay status=pending again");
  }
}

function deliveryFilter(query: Record<string, string>) {
  if (query.status && !(DELIVERY_STATUSES as readonly string[]).includes(query.status)) {
    throw new HttpError(400, "invalid_status", `status must be one of ${DELIVERY_STATUSES.join(", ")}`);
  }
  return { status: query.status, destination: query.destination, since: timeParam(query.since, "since") };
}

function deliveryCursor(cursor: string | undefined): [number, string, string] | null {
  if (!cursor) return null;
  try {
    const value = JSON.parse(atob(cursor)) as unknown;
    if (Array.isArray(value) && typeof value[0] === "number" && typeof value[1] === "string" && typeof value[2] === "string") {
      return value as [number, string, string];
    }
  } catch {
    // fall through to the error below
  }
  throw new HttpError(400, "invalid_cursor", "cursor is not one this API returned");
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The API's shape of an event: camelCase, ISO times, the payload parsed when it was stored whole. */
function eventView(row: Omit<EventRow, "body"> & { body?: string }) {
  return {
    id: row.key,
    provider: row.provider,
    eventId: row.event_id,
    type: row.type,
    knownType: row.known_type === 1,
    tenant: row.tenant,
    occurredAt: row.occurred_at,
    receivedAt: iso(row.received_at),
    verifiedWith: row.verified_with,
    status: row.status,
    enqueuedAt: iso(row.enqueued_at),
    ...(row.body === undefined ? {} : { contentType: row.content_type, payload: JSON.parse(row.body) as unknown }),
  };
}

function deliveryView(row: DeliveryRow, attempts?: AttemptRow[]) {
  return {
    eventId: row.event_key,
    destination: row.destination,
    status: row.status,
    attempts: row.attempts,
    lastStatusCode: row.last_status_code,
    lastError: row.last_error,
    lastAttemptAt: iso(row.last_attempt_at),
    nextAttemptAt: iso(row.next_attempt_at),
    deliveredAt: iso(row.delivered_at),
    deadLetteredAt: iso(row.dead_lettered_at),
    ...(attempts && {
      history: attempts
        .filter((a) => a.destination === row.destination)
        .map((a) => ({ attempt: a.attempt, at: iso(a.started_at), durationMs: a.duration_ms, statusCode: a.status_code, error: a.error })),
    }),
  };
}

function limitParam(value: string | undefined, fallback = 50): number {
  if (value === undefined) return fallback;
  const limit = Number(value);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
    throw new HttpError(400, "invalid_limit", `limit must be an integer from 1 to ${MAX_PAGE}`);
  }
  return limit;
}

/** Accepts ISO 8601 or epoch milliseconds. */
function timeParam(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === "") return undefined;
  const ms = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isFinite(ms)) throw new HttpError(400, "invalid_time", `${name} must be an ISO 8601 time or epoch milliseconds`);
  return ms;
}
