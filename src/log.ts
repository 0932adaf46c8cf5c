import type { MiddlewareHandler } from "hono";
import type { AppEnv, LogFields } from "./env";

/** Collects fields while the request runs and writes them as one JSON line at the end. */
export function requestLog(): MiddlewareHandler<AppEnv> {
  return async function requestLog(c, next) {
    const started = Date.now();
    const fields: LogFields = { method: c.req.method, path: c.req.path };
    c.set("log", fields);
    await next();
    fields.status = c.res.status;
    fields.durationMs = Date.now() - started;
    console.log(JSON.stringify(fields));
  };
}
