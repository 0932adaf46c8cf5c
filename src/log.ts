import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "./app";

/** Fields of the one structured log line written per request. Never a secret or a body. */
export interface LogFields {
  method: string;
  path: string;
  provider?: string;
  eventKey?: string;
  eventId?: string;
  type?: string;
  outcome?: string;
  status?: number;
  durationMs?: number;
  warning?: string;
  error?: string;
}

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
