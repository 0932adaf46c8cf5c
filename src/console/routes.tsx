/** The operator console at /console: the same operations as the admin API, as pages. */
import { Hono, type Context } from "hono";
import { searchEnabled, type AppEnv, type Env } from "../env";
import { bulkReplayQuery, eventFilter, limitParam, payloadView, replayDeliveries, replayEvent, requireEvent, sourceView } from "../admin/operations";
import { releaseQuarantined, requireQuarantined } from "../admin/quarantine";
import type { PreviewView, ReleaseView } from "../admin/schemas";
import { previewTransform } from "../admin/preview";
import { alertsView, destinationsView, pauseDestination, resumeDestination } from "../admin/destinations";
import { loadDestinations, route } from "../deliver/destinations";
import { HttpError } from "../errors";
import { builtInSources, loadSources } from "../sources";
import { tokensEqual } from "../crypto";
import { consoleCounts, destinationHealth, timeline } from "../store/charts";
import { getAttempts, getDeliveries, listDeliveries } from "../store/deliveries";
import { bodyJson, listEvents, sourceOf, type EventPage as EventListPage } from "../store/events";
import { listQuarantine, type QuarantineRow } from "../store/quarantine";
import type { Timeline } from "./charts";
import { boundedForms, sameOriginForms } from "./forms";
import { AuditPage, DeadPage, DestinationsPage, EventLog, EventPage, LoginPage, QuarantinePage, SourcesPage, type AuditFilterValues, type EventFilterValues } from "./pages";
import { consoleAuth, endSession, signedIn, startSession } from "./session";
import { clientOf, countFailure, refuseIfLocked, WINDOW_SECONDS } from "../throttle";
import { accessSettings, ADMIN_TOKEN_IDENTITY, adminToken } from "../admin/auth";
import { requireRole } from "../admin/roles";
import { auditActions, auditFilter, auditView, noteAudit, recordSignIn, recordSignOut } from "../admin/audit";
import { listAudit } from "../store/audit";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** What the event page says after a release from quarantine led to it. */
const RELEASE_NOTICES = new Map<string, string>([
  ["accepted", "Released from quarantine: queued to be stored and delivered."],
  ["already_released", "That payload had already been released into this event."],
] satisfies [ReleaseView["status"], string][]);

export const consoleRoutes = new Hono<AppEnv>();

consoleRoutes.use("*", async (c, next) => {
  await next();
  c.header("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'");
  c.header("Cache-Control", "no-store");
});

// Every form post, signed in or not (sign-in and sign-out included), before anything reads it.
consoleRoutes.use("*", sameOriginForms(), boundedForms());

/** With Cloudflare Access configured, Access signs people in at the edge: the token form is not served. */
consoleRoutes.get("/login", (c) => (accessSettings(c.env) ? c.redirect("/console", 303) : c.html(<LoginPage />)));

consoleRoutes.post("/login", async (c) => {
  if (accessSettings(c.env)) return c.redirect("/console", 303);
  const expected = adminToken(c.env);
  const client = clientOf(c.req.header("cf-connecting-ip"));
  try {
    // Before the token is looked at: a locked-out client learns nothing, even from the right one.
    refuseIfLocked(client);
    const form = await c.req.parseBody();
    if (typeof form.token !== "string" || !tokensEqual(form.token, expected)) {
      if (typeof form.token === "string" && form.token !== "") await countFailure(c.env, client);
      return c.html(<LoginPage error="That token is not right." />, 401);
    }
  } catch (err) {
    if (!(err instanceof HttpError && err.status === 429)) throw err;
    const seconds = err.detail.retryAfterSeconds ?? WINDOW_SECONDS;
    c.header("Retry-After", String(seconds));
    return c.html(<LoginPage error={`Too many failed sign-ins from your address. Try again in ${seconds} second${seconds === 1 ? "" : "s"}.`} />, 429);
  }
  // The sign-in is an action like the others: refused (503) when it cannot be recorded.
  await recordSignIn(c, ADMIN_TOKEN_IDENTITY, 303);
  await startSession(c, expected);
  return c.redirect("/console", 303);
});

consoleRoutes.post("/logout", async (c) => {
  await recordSignOut(c, await signedIn(c), 303);
  endSession(c);
  // Access's own sign-out, served on this hostname by Cloudflare, ends its session for the application.
  return c.redirect(accessSettings(c.env) ? "/cdn-cgi/access/logout" : "/console/login", 303);
});

consoleRoutes.use("*", consoleAuth());
// Each operator action is recorded, refused ones (a viewer's) included: before the routes' role checks.
consoleRoutes.use("*", auditActions("console"));

/** Whether the signed-in identity may change state: the pages hide what a viewer may not do. */
const canOperate = (c: Context<AppEnv>) => c.get("identity")?.role === "operator";
const operator = requireRole("operator");

consoleRoutes.get("/", async (c) => {
  const query = c.req.query();
  const filters: EventFilterValues = {
    q: query.q, provider: query.provider, source: query.source, type: query.type, status: query.status, tenant: query.tenant, eventId: query.eventId, since: query.since, until: query.until,
  };
  const now = Date.now();
  const [page, counts, hour, day] = await Promise.all([
    eventLogPage(c.env, query),
    consoleCounts(c.env.DB, now),
    recent(c.env.DB, now, 5 * 60_000, 12),
    recent(c.env.DB, now, HOUR, 24),
  ]);
  const config = loadSources(c.env);
  const sources = (config.ok ? config.sources : builtInSources).map((s) => s.name);
  const log = <EventLog filters={filters} sources={sources} search={searchEnabled(c.env)} counts={counts} hour={hour} day={day} events={page.events} nextCursor={page.nextCursor} error={page.error?.message} />;
  return c.html(log, page.error?.status ?? 200);
});

/**
 * The last `count` buckets of `bucketMs`, the last one the bucket now is in: aligned to the
 * bucket size, so the charts' time labels fall on round minutes and hours.
 */
async function recent(db: D1Database, now: number, bucketMs: number, count: number): Promise<Timeline> {
  const since = Math.floor(now / bucketMs) * bucketMs - (count - 1) * bucketMs;
  return { buckets: await timeline(db, since, bucketMs, count), bucketMs };
}

/**
 * The event log's rows, or why its filters cannot be used (a search with no word, a bad time, an
 * index still being built): said on the page, beside the filters to correct, with the API's status.
 */
async function eventLogPage(env: Env, query: Record<string, string>): Promise<EventListPage & { error?: HttpError }> {
  try {
    return await listEvents(env.DB, eventFilter(env, query), limitParam(query.limit), query.cursor || null);
  } catch (err) {
    if (err instanceof HttpError) return { events: [], nextCursor: null, error: err };
    throw err;
  }
}

consoleRoutes.get("/stats.json", async (c) => {
  const counts = await consoleCounts(c.env.DB, Date.now());
  return c.json({ hour: counts.hour, day: counts.day, dead: counts.deadDeliveries });
});

consoleRoutes.get("/events/:id", async (c) => {
  const replayed = c.req.query("replayed");
  const released = RELEASE_NOTICES.get(c.req.query("released") ?? "");
  return c.html(
    await eventPage(c.env, c.req.param("id"), {
      canOperate: canOperate(c),
      notice: released ?? (replayed === undefined ? undefined : replayed ? `Replay queued to ${replayed}.` : "No destination routes this event; nothing to replay."),
    }),
  );
});

/** The Preview action: the destination's transform on this event, shown on its page; nothing is forwarded. */
consoleRoutes.post("/events/:id/preview", operator, async (c) => {
  const form = await c.req.parseBody();
  const destination = typeof form.destination === "string" ? form.destination : "";
  const preview = await previewTransform(c.env, destination, { eventId: c.req.param("id") });
  return c.html(await eventPage(c.env, c.req.param("id"), { preview, canOperate: true }));
});

async function eventPage(env: Env, id: string, extra: { notice?: string; preview?: PreviewView; canOperate: boolean }) {
  const event = await requireEvent(env, id);
  const [deliveries, attempts] = await Promise.all([getDeliveries(env.DB, event.key), getAttempts(env.DB, event.key)]);
  const config = loadDestinations(env);
  const destinations = config.ok ? config.destinations : [];
  // Preview only where the event goes: routed as the consumer routes it.
  const routed = route(destinations, { provider: event.provider, source: sourceOf(event), type: event.type, envelope: bodyJson(event.body)?.json ?? null }).destinations;
  return (
    <EventPage
      event={event}
      deliveries={deliveries}
      attempts={attempts}
      destinations={destinations.map((d) => d.name)}
      transformed={routed.filter((d) => d.transform).map((d) => d.name)}
      {...extra}
    />
  );
}

consoleRoutes.post("/events/:id/replay", operator, async (c) => {
  const event = await requireEvent(c.env, c.req.param("id"));
  const form = await c.req.parseBody();
  const destination = typeof form.destination === "string" && form.destination ? form.destination : undefined;
  const replayed = await replayEvent(c.env, event, destination);
  noteAudit(c, { destinations: replayed });
  return c.redirect(`/console/events/${event.key}?replayed=${encodeURIComponent(replayed.join(", "))}`, 303);
});

consoleRoutes.get("/dead", async (c) => {
  const [dead, transformFailed, quarantined] = await Promise.all([
    listDeliveries(c.env.DB, { status: "dead" }, 200, null),
    listDeliveries(c.env.DB, { status: "transform_failed" }, 200, null),
    listQuarantine(c.env.DB, {}, 200, c.req.query("quarantineCursor") || null),
  ]);
  const replayed = c.req.query("replayed");
  return c.html(
    <DeadPage
      canOperate={canOperate(c)}
      dead={dead}
      transformFailed={transformFailed}
      quarantined={quarantined.items}
      olderQuarantined={quarantined.nextCursor}
      notice={replayed ? `Replay queued for ${replayed} ${c.req.query("status") === "transform_failed" ? "failed transforms" : "dead deliveries"}.` : undefined}
    />,
  );
});

const quarantinePage = (item: QuarantineRow, canOperate: boolean, error?: HttpError) => (
  <QuarantinePage item={item} payload={payloadView(new Uint8Array(item.body))} canOperate={canOperate} error={error && { message: error.message, path: error.detail.path }} />
);

consoleRoutes.get("/quarantine/:id", async (c) => {
  return c.html(quarantinePage(await requireQuarantined(c.env, c.req.param("id")), canOperate(c)));
});

consoleRoutes.post("/quarantine/:id/release", operator, async (c) => {
  const item = await requireQuarantined(c.env, c.req.param("id"));
  const form = await c.req.parseBody();
  let release: ReleaseView;
  try {
    release = await releaseQuarantined(c.env, item, form.force === "true");
  } catch (err) {
    // Still invalid, or not releasable: back to its page saying why, where it can be forced.
    if (err instanceof HttpError && err.status === 422) {
      noteAudit(c, {}, err.code);
      return c.html(quarantinePage(item, true, err), 422);
    }
    throw err;
  }
  noteAudit(c, { eventId: release.id, released: release.status });
  Object.assign(c.get("log"), { eventKey: release.id, outcome: `release:${release.status}` });
  return c.redirect(`/console/events/${release.id}?released=${release.status}`, 303);
});

consoleRoutes.post("/replay", operator, async (c) => {
  const form = await c.req.parseBody();
  const destination = typeof form.destination === "string" ? form.destination : undefined;
  // The Dead page's two lists: dead deliveries, and failed transforms (bulkReplayQuery refuses any other status).
  const status = form.status === "transform_failed" ? "transform_failed" : "dead";
  const result = await replayDeliveries(c.env, bulkReplayQuery({ status, destination }));
  noteAudit(c, { count: result.replayed, events: result.events, more: result.more });
  return c.redirect(`/console/dead?replayed=${result.replayed}&status=${status}`, 303);
});

consoleRoutes.get("/destinations", async (c) => {
  const [view, alerts] = await Promise.all([destinationsView(c.env), alertsView(c.env)]);
  const health = view.valid ? await destinationHealth(c.env.DB, view.destinations.map((d) => d.name), Date.now() - DAY) : [];
  const notice = DESTINATION_NOTICES.get(c.req.query("done") ?? "");
  return c.html(
    <DestinationsPage canOperate={canOperate(c)} destinations={view.valid ? view.destinations : null} errors={view.valid ? [] : view.errors} health={health} alerts={alerts} notice={notice && `${c.req.query("name") ?? ""} ${notice}`} />,
  );
});

/** What the destinations page says after its Pause or Resume button. */
const DESTINATION_NOTICES = new Map([
  ["paused", "is paused: its deliveries are held until it is resumed."],
  ["resumed", "is resumed: what it held is being delivered, oldest first."],
]);

consoleRoutes.post("/destinations/:name/pause", operator, async (c) => {
  const { destination } = await pauseDestination(c.env, c.req.param("name"));
  return c.redirect(`/console/destinations?done=paused&name=${encodeURIComponent(destination.name)}`, 303);
});

consoleRoutes.post("/destinations/:name/resume", operator, async (c) => {
  const { destination } = await resumeDestination(c.env, c.req.param("name"));
  return c.redirect(`/console/destinations?done=resumed&name=${encodeURIComponent(destination.name)}`, 303);
});

consoleRoutes.get("/sources", (c) => {
  const config = loadSources(c.env);
  const sources = (config.ok ? config.sources : builtInSources).map((source) => sourceView(source, c.env));
  return c.html(<SourcesPage sources={sources} errors={config.ok ? [] : config.errors} />);
});

consoleRoutes.get("/audit", async (c) => {
  const query = c.req.query();
  const filters: AuditFilterValues = { actor: query.actor, action: query.action, target: query.target, since: query.since, until: query.until };
  try {
    const page = await listAudit(c.env.DB, auditFilter(query), limitParam(query.limit), query.cursor || null);
    return c.html(<AuditPage filters={filters} records={page.records.map(auditView)} nextCursor={page.nextCursor} />);
  } catch (err) {
    // A bad time or cursor: said on the page, beside the filters to correct.
    if (err instanceof HttpError) return c.html(<AuditPage filters={filters} records={[]} nextCursor={null} error={err.message} />, err.status);
    throw err;
  }
});
