import { Hono } from "hono";
import { adminTokenState } from "./admin/auth";
import { adminRoutes } from "./admin/routes";
import { consoleRoutes } from "./console/routes";
import { alertConfig } from "./alerts/send";
import { loadDestinations } from "./deliver/destinations";
import type { AppEnv } from "./env";
import { errorResponse, HttpError } from "./errors";
import { requestLog } from "./log";
import { providers } from "./providers";
import { webhookOutcomes } from "./receive/outcomes";
import { receiveWebhook } from "./receive/webhook";

export const app = new Hono<AppEnv>();

app.use("*", requestLog());

/**
 * Liveness plus whether DESTINATIONS is valid (503 when not: events wait until it is fixed), and
 * whether ADMIN_TOKEN is set and long enough (503 when it is too short: the admin API is closed).
 * Unauthenticated, so it counts errors and names no destination; the errors themselves are on
 * /admin/destinations (#9.6). Whether each provider has a secret is no news: its webhook endpoint
 * already answers provider_not_configured.
 */
app.get("/healthz", (c) => {
  const destinations = loadDestinations(c.env);
  const alerts = alertConfig(c.env);
  const admin = adminTokenState(c.env);
  const ok = destinations.ok && alerts.ok && admin.valid;
  return c.json(
    {
      status: ok ? "ok" : "degraded",
      providers: Object.fromEntries(providers.map((p) => [p.name, { configured: p.secrets(c.env).length > 0 }])),
      destinations: { valid: destinations.ok, errors: destinations.ok ? 0 : destinations.errors.length },
      alerts: { configured: Boolean(c.env.ALERT_URL), valid: alerts.ok, errors: alerts.ok ? 0 : alerts.errors.length },
      admin,
    },
    ok ? 200 : 503,
  );
});

app.post("/webhooks/:provider", webhookOutcomes(), receiveWebhook());

app.route("/admin", adminRoutes);
app.route("/console", consoleRoutes);

app.notFound((c) => {
  throw new HttpError(404, "not_found", `no route for ${c.req.method} ${c.req.path}`);
});
app.onError(errorResponse);
