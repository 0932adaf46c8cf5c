/** The operator console at /console: the same operations as the admin API, as pages. */
import { Hono } from "hono";
import type { AppEnv } from "../env";
import { deliveryFilter, limitParam, replayDeliveries, replayEvent, requireEvent, timeParam } from "../admin/operations";
import { loadDestinations } from "../deliver/destinations";
import { tokensEqual } from "../receive/signature";
import { consoleCounts, getAttempts, getDeliveries, listDeliveries, stats, timeline } from "../store/deliveries";
import { listEvents, listQuarantine } from "../store/events";
import { DeadPage, DestinationsPage, EventLog, EventPage, LoginPage, type EventFilterValues } from "./pages";
import { consoleAuth, endSession, startSession } from "./session";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export const consoleRoutes = new Hono<AppEnv>();

consoleRoutes.use("*", async (c, next) => {
  await next();
  c.header("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'");
  c.header("Cache-Control", "no-store");
});

consoleRoutes.get("/login", (c) => c.html(<LoginPage />));

consoleRoutes.post("/login", async (c) => {
  const form = await c.req.parseBody();
  const expected = c.env.ADMIN_TOKEN;
  if (!expected || typeof form.token !== "string" || !tokensEqual(form.token, expected)) {
    return c.html(<LoginPage error="That token is not right." />, 401);
  }
  await startSession(c, expected);
  return c.redirect("/console", 303);
});

consoleRoutes.post("/logout", (c) => {
  endSession(c);
  return c.redirect("/console/login", 303);
});

consoleRoutes.use("*", consoleAuth());

consoleRoutes.get("/", async (c) => {
  const q = c.req.query();
  const filters: EventFilterValues = { provider: q.provider, type: q.type, status: q.status, tenant: q.tenant, eventId: q.eventId, since: q.since, until: q.until };
  const now = Date.now();
  const [page, counts, hour, day] = await Promise.all([
    listEvents(
      c.env.DB,
      { provider: q.provider, type: q.type, status: q.status, tenant: q.tenant, eventId: q.eventId, since: timeParam(q.since, "since"), until: timeParam(q.until, "until") },
      limitParam(q.limit),
      q.cursor || null,
    ),
    consoleCounts(c.env.DB, now),
    timeline(c.env.DB, now - HOUR, 5 * 60_000, 12),
    timeline(c.env.DB, now - DAY, HOUR, 24),
  ]);
  return c.html(<EventLog filters={filters} events={page.events} nextCursor={page.nextCursor} counts={counts} hour={hour} day={day} />);
});

consoleRoutes.get("/stats.json", async (c) => {
  const counts = await consoleCounts(c.env.DB, Date.now());
  return c.json({ hour: counts.hour, day: counts.day, dead: counts.deadDeliveries });
});

consoleRoutes.get("/events/:id", async (c) => {
  const event = await requireEvent(c.env, c.req.param("id"));
  const [deliveries, attempts] = await Promise.all([getDeliveries(c.env.DB, event.key), getAttempts(c.env.DB, event.key)]);
  const config = loadDestinations(c.env);
  const replayed = c.req.query("replayed");
  return c.html(
    <EventPage
      event={event}
      deliveries={deliveries}
      attempts={attempts}
      destinations={config.ok ? config.destinations.map((d) => d.name) : []}
      notice={replayed === undefined ? undefined : replayed ? `Replay queued to ${replayed}.` : "No destination routes this event; nothing to replay."}
    />,
  );
});

consoleRoutes.post("/events/:id/replay", async (c) => {
  const event = await requireEvent(c.env, c.req.param("id"));
  const form = await c.req.parseBody();
  const destination = typeof form.destination === "string" && form.destination ? form.destination : undefined;
  const replayed = await replayEvent(c.env, event, destination);
  return c.redirect(`/console/events/${event.key}?replayed=${encodeURIComponent(replayed.join(", "))}`, 303);
});

consoleRoutes.get("/dead", async (c) => {
  const [dead, quarantined] = await Promise.all([
    listDeliveries(c.env.DB, { status: "dead" }, 200, null),
    listQuarantine(c.env.DB, 200),
  ]);
  const replayed = c.req.query("replayed");
  return c.html(<DeadPage dead={dead} quarantined={quarantined} notice={replayed ? `Replay queued for ${replayed} dead deliveries.` : undefined} />);
});

consoleRoutes.post("/replay", async (c) => {
  const form = await c.req.parseBody();
  const destination = typeof form.destination === "string" ? form.destination : undefined;
  const result = await replayDeliveries(c.env, deliveryFilter({ status: "dead", destination }));
  return c.redirect(`/console/dead?replayed=${result.replayed}`, 303);
});

consoleRoutes.get("/destinations", async (c) => {
  const config = loadDestinations(c.env);
  const now = Date.now();
  const { deliveries } = await stats(c.env.DB, now - DAY, now + 1);
  const rates = new Map<string, { delivered: number; total: number }>();
  for (const row of deliveries) {
    const rate = rates.get(row.destination) ?? { delivered: 0, total: 0 };
    rate.total += row.count;
    if (row.status === "delivered" || row.status === "gone") rate.delivered += row.count;
    rates.set(row.destination, rate);
  }
  return c.html(<DestinationsPage destinations={config.ok ? config.destinations : null} errors={config.ok ? [] : config.errors} rates={rates} />);
});
