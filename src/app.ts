import { Hono } from "hono";
import { accessState, adminTokenState } from "./admin/auth";
import { adminRoutes } from "./admin/routes";
import { consoleRoutes } from "./console/routes";
import { alertConfig } from "./alerts/config";
import { loadDestinations } from "./deliver/destinations";
import type { AppEnv } from "./env";
import { errorResponse, HttpError } from "./errors";
import { requestLog } from "./log";
import { webhookOutcomes } from "./receive/outcomes";
import { receiveWebhook } from "./receive/webhook";
import { builtInSources, loadSources, sourceSecrets } from "./sources";

export const app = new Hono<AppEnv>();

/**
 * An accepted event writes no line of its own: Workers Logs records every invocation (path, status,
 * CPU and wall time), the event itself is in D1 (the admin API, the console), and under load the
 * line cost as much CPU as verifying the request (README "Performance"). Everything else is
 * logged: refusals, challenges, quarantines, warnings, errors, the admin API and the console.
 */
app.use("*", requestLog({ skip: (fields) => fields.status === 200 && fields.outcome?.startsWith("accepted:") === true && !fields.warning }));

/**
 * Liveness plus whether DESTINATIONS and SOURCES are valid (503 when not: events wait, or senders
 * retry, until they are fixed), whether the ALERT_* settings are, whether ADMIN_TOKEN is set
 * and long enough (503 when it is too short and Access is off: the admin API is closed), and
 * whether Cloudflare Access is configured and its settings (ACCESS_*, OPERATORS, VIEWERS) valid. Unauthenticated, so it
 * counts errors and names no destination and no declared source (a source's name is the path
 * that takes its webhooks); the errors themselves are on /admin/destinations, /admin/sources and
 * /admin/alerts. `providers` says whether each built-in source has its secret, which is no news:
 * its webhook endpoint already answers provider_not_configured.
 */
app.get("/healthz", (c) => {
  const destinations = loadDestinations(c.env);
  const sources = loadSources(c.env);
  const alerts = alertConfig(c.env);
  const admin = adminTokenState(c.env);
  const access = accessState(c.env);
  // With Access configured the token signs nobody in, so its length no longer matters.
  const ok = destinations.ok && sources.ok && alerts.ok && access.valid && (access.configured || admin.valid);
  const unconfigured = sources.ok ? sources.sources.filter((s) => !s.builtIn && !sourceSecrets(s, c.env)).length : 0;
  return c.json(
    {
      status: ok ? "ok" : "degraded",
      providers: Object.fromEntries(builtInSources.map((s) => [s.name, { configured: sourceSecrets(s, c.env) !== null }])),
      destinations: { valid: destinations.ok, errors: destinations.ok ? 0 : destinations.errors.length },
      sources: { valid: sources.ok, errors: sources.ok ? 0 : sources.errors.length, unconfigured },
      alerts: { configured: Boolean(c.env.ALERT_URL), valid: alerts.ok, errors: alerts.ok ? 0 : alerts.errors.length },
      admin,
      access,
    },
    ok ? 200 : 503,
  );
});

app.post("/webhooks/:source", webhookOutcomes(), receiveWebhook());

app.route("/admin", adminRoutes);
app.route("/console", consoleRoutes);

app.notFound((c) => {
  throw new HttpError(404, "not_found", `no route for ${c.req.method} ${c.req.path}`);
});
app.onError(errorResponse);
