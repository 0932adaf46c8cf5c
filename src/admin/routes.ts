import { Hono } from "hono";
import type { AppEnv } from "../app";
import { HttpError } from "../errors";
import { getEvent, listEvents, type EventRow } from "../store/events";
import { adminAuth } from "./auth";

const MAX_PAGE = 200;

/** The operator API: read events (and, with the delivery path, deliveries and replays). */
export const adminRoutes = new Hono<AppEnv>();
adminRoutes.use("*", adminAuth());

adminRoutes.get("/events/:id", async (c) => {
  const row = await getEvent(c.env.DB, c.req.param("id"));
  if (!row) throw new HttpError(404, "event_not_found", "no event with that id");
  return c.json({ event: eventView(row) });
});

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
    receivedAt: new Date(row.received_at).toISOString(),
    verifiedWith: row.verified_with,
    status: row.status,
    enqueuedAt: row.enqueued_at === null ? null : new Date(row.enqueued_at).toISOString(),
    ...(row.body === undefined ? {} : { contentType: row.content_type, payload: JSON.parse(row.body) as unknown }),
  };
}

export function limitParam(value: string | undefined, fallback = 50): number {
  if (value === undefined) return fallback;
  const limit = Number(value);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
    throw new HttpError(400, "invalid_limit", `limit must be an integer from 1 to ${MAX_PAGE}`);
  }
  return limit;
}

/** Accepts ISO 8601 or epoch milliseconds. */
export function timeParam(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === "") return undefined;
  const ms = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isFinite(ms)) throw new HttpError(400, "invalid_time", `${name} must be an ISO 8601 time or epoch milliseconds`);
  return ms;
}
