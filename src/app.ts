import { Hono } from "hono";
import { adminRoutes } from "./admin/routes";
import type { Env } from "./env";
import { errorResponse, HttpError } from "./errors";
import { requestLog, type LogFields } from "./log";
import { providerNames, findProvider } from "./providers";
import { receiveWebhook } from "./receive/webhook";

export interface AppEnv {
  Bindings: Env;
  Variables: { log: LogFields };
}

export const app = new Hono<AppEnv>();

app.use("*", requestLog());

app.get("/healthz", (c) =>
  c.json({
    status: "ok",
    providers: Object.fromEntries(
      providerNames().map((name) => [name, { configured: findProvider(name)!.secrets(c.env).length > 0 }]),
    ),
  }),
);

app.post("/webhooks/:provider", receiveWebhook());

app.route("/admin", adminRoutes);

app.notFound((c) => {
  throw new HttpError(404, "not_found", `no route for ${c.req.method} ${c.req.path}`);
});
app.onError(errorResponse);
