import type { MiddlewareHandler } from "hono";
import type { AppEnv, LogFields } from "./env";

export interface RequestLogOptions {
  /** Requests that write no line (Workers Logs still records the invocation). */
  skip?: (fields: LogFields) => boolean;
}

/** Collects fields while the request runs and writes them as one JSON line at the end, unless `skip` says not to. */
export function requestLog({ skip }: RequestLogOptions = {}): MiddlewareHandler<AppEnv> {
  return async function requestLog(c, next) {
    const started = Date.now();
    const fields: LogFields = { method: c.req.method, path: c.req.path };
    c.set("log", fields);
    await next();
    fields.status = c.res.status;
    fields.durationMs = Date.now() - started;
    if (!skip?.(fields)) console.log(JSON.stringify(fields));
  };
}
