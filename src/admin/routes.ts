import { Hono } from "hono";
import type { AppEnv } from "../env";
import { HttpError } from "../errors";
import { listDeadLetters } from "../store/dead-letters";
import { stats } from "../store/charts";
import { getAttempts, getDeliveries, listDeliveries, type DeliveryCursor } from "../store/deliveries";
import { listEvents } from "../store/events";
import { listQuarantine } from "../store/quarantine";
import { builtInSources, loadSources } from "../sources";
import { listAudit } from "../store/audit";
import { auditActions, auditFilter, auditView, noteAudit } from "./audit";
import { adminAuth } from "./auth";
import { requireRole } from "./roles";
import { alertsView, destinationsView, pauseDestination, resumeDestination } from "./destinations";
import { prometheusText, PROMETHEUS_CONTENT_TYPE } from "./metrics";
import {
  bulkReplayQuery, deliveryFilter, deliveryView, eventDetailView, eventFilter, eventView, iso, limitParam, replayDeliveries, replayEvent, requireEvent, sourceView, timeParam,
} from "./operations";
import { documentedRole, openApiDocument } from "./openapi";
import { previewRequest, previewTransform } from "./preview";
import { flagParam, quarantineDetailView, quarantineFilter, quarantineView, releaseQuarantined, requireQuarantined } from "./quarantine";

const DAY_MS = 86_400_000;

/**
 * The operator API: events, deliveries, replays and stats, behind Cloudflare Access or the admin
 * bearer token. Every route needs the viewer role; those that change state, the operator role.
 */
export const adminRoutes = new Hono<AppEnv>();
// The role each route needs is the one its description states (ADMIN_API), so the two cannot differ.
// The audit log records each operator action between the two: a viewer's refused one included.
adminRoutes.use("*", adminAuth(), auditActions("admin"), requireRole(documentedRole));

adminRoutes.get("/events", async (c) => {
  const query = c.req.query();
  const page = await listEvents(c.env.DB, eventFilter(c.env, query), limitParam(query.limit), query.cursor ?? null);
  return c.json({ events: page.events.map(eventView), nextCursor: page.nextCursor });
});

adminRoutes.get("/events/:id", async (c) => {
  const row = await requireEvent(c.env, c.req.param("id"));
  const [deliveries, attempts] = await Promise.all([getDeliveries(c.env.DB, row.key), getAttempts(c.env.DB, row.key)]);
  return c.json({ event: eventDetailView(row, deliveries, attempts) });
});

adminRoutes.post("/events/:id/replay", async (c) => {
  const row = await requireEvent(c.env, c.req.param("id"));
  const roundInFlight = row.lease_until !== null && row.lease_until > Date.now();
  const replayed = await replayEvent(c.env, row, c.req.query("destination"));
  noteAudit(c, { destinations: replayed });
  return c.json({ id: row.key, replayed, roundInFlight }, 202);
});

adminRoutes.get("/deliveries", async (c) => {
  const filter = deliveryFilter(c.req.query());
  const limit = limitParam(c.req.query("limit"));
  const rows = await listDeliveries(c.env.DB, filter, limit + 1, deliveryCursor(c.req.query("cursor")));
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return c.json({
    deliveries: page.map(deliveryView),
    nextCursor: rows.length > limit && last ? btoa(JSON.stringify([last.updated_at, last.event_key, last.destination])) : null,
  });
});

adminRoutes.post("/replay", async (c) => {
  const result = await replayDeliveries(c.env, bulkReplayQuery(c.req.query()));
  noteAudit(c, { count: result.replayed, events: result.events, more: result.more });
  return c.json(result, 202);
});

adminRoutes.get("/quarantine", async (c) => {
  const query = c.req.query();
  const page = await listQuarantine(c.env.DB, quarantineFilter(query), limitParam(query.limit), query.cursor || null);
  return c.json({ quarantined: page.items.map(quarantineView), nextCursor: page.nextCursor });
});

adminRoutes.get("/quarantine/:id", async (c) => {
  return c.json({ quarantined: quarantineDetailView(await requireQuarantined(c.env, c.req.param("id"))) });
});

adminRoutes.post("/quarantine/:id/release", async (c) => {
  const force = flagParam(c.req.query("force"), "force") ?? false;
  const row = await requireQuarantined(c.env, c.req.param("id"));
  const release = await releaseQuarantined(c.env, row, force);
  noteAudit(c, { eventId: release.id, released: release.status });
  Object.assign(c.get("log"), { eventKey: release.id, outcome: `release:${release.status}` });
  return c.json(release);
});

adminRoutes.get("/stats", async (c) => {
  const until = timeParam(c.req.query("until"), "until") ?? Date.now();
  const since = timeParam(c.req.query("since"), "since") ?? until - DAY_MS;
  return c.json({ since: new Date(since).toISOString(), until: new Date(until).toISOString(), ...(await stats(c.env.DB, since, until)) });
});

adminRoutes.get("/destinations", async (c) => c.json(await destinationsView(c.env)));

adminRoutes.post("/destinations/:name/pause", async (c) => {
  const answer = await pauseDestination(c.env, c.req.param("name"));
  c.get("log").outcome = "paused";
  return c.json(answer);
});

adminRoutes.post("/destinations/:name/resume", async (c) => {
  const answer = await resumeDestination(c.env, c.req.param("name"));
  c.get("log").outcome = "resumed";
  return c.json(answer);
});

adminRoutes.post("/destinations/:name/preview", async (c) => {
  const request = await previewRequest(c.req.raw, c.env);
  // Which event, or which provider's pasted payload: never the payload itself.
  noteAudit(c, "eventId" in request ? { eventId: request.eventId } : { provider: request.provider });
  return c.json(await previewTransform(c.env, c.req.param("name"), request));
});

adminRoutes.get("/alerts", async (c) => c.json(await alertsView(c.env)));

adminRoutes.get("/sources", (c) => {
  const config = loadSources(c.env);
  const view = (sources: typeof builtInSources) => sources.map((source) => sourceView(source, c.env));
  if (!config.ok) return c.json({ valid: false, errors: config.errors, sources: view(builtInSources) });
  return c.json({ valid: true, sources: view(config.sources) });
});

adminRoutes.get("/metrics", async (c) => c.body(await prometheusText(c.env), 200, { "content-type": PROMETHEUS_CONTENT_TYPE }));

adminRoutes.get("/dead-letters", async (c) => {
  const limit = limitParam(c.req.query("limit"));
  const rows = await listDeadLetters(c.env.DB, limit + 1, deadLetterCursor(c.req.query("cursor")));
  const page = rows.slice(0, limit);
  const last = page[page.length - 1];
  return c.json({
    deadLetters: page.map((row) => ({
      messageId: row.message_id,
      eventId: row.event_key,
      destinations: row.destinations === null ? null : (JSON.parse(row.destinations) as string[]),
      attempts: row.attempts,
      receivedAt: iso(row.received_at),
    })),
    nextCursor: rows.length > limit && last ? btoa(JSON.stringify([last.received_at, last.message_id])) : null,
  });
});

adminRoutes.get("/audit", async (c) => {
  const query = c.req.query();
  const page = await listAudit(c.env.DB, auditFilter(query), limitParam(query.limit), query.cursor || null);
  return c.json({ records: page.records.map(auditView), nextCursor: page.nextCursor });
});

adminRoutes.get("/openapi.json", (c) => c.json(openApiDocument()));

function deadLetterCursor(cursor: string | undefined): [number, string] | null {
  if (!cursor) return null;
  const value = decodeJsonCursor(cursor);
  if (Array.isArray(value) && value.length === 2 && typeof value[0] === "number" && typeof value[1] === "string") return [value[0], value[1]];
  throw invalidCursor();
}

function decodeJsonCursor(cursor: string): unknown {
  try {
    return JSON.parse(atob(cursor)) as unknown;
  } catch {
    throw invalidCursor();
  }
}

const invalidCursor = () => new HttpError(400, "invalid_cursor", "cursor is not one this API returned");

function deliveryCursor(cursor: string | undefined): DeliveryCursor | null {
  if (!cursor) return null;
  const value = decodeJsonCursor(cursor);
  if (Array.isArray(value) && typeof value[0] === "number" && typeof value[1] === "string" && typeof value[2] === "string") {
    return [value[0], value[1], value[2]];
  }
  throw invalidCursor();
}
