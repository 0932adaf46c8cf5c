import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { HTTPException } from "hono/http-exception";
import type { AppEnv, Role } from "./env";

/**
 * The one error type for answers that are not a success: a client fault (4xx) or a
 * temporary inability to accept (503, the provider retries). Thrown anywhere on a
 * path, turned into a JSON body in exactly one place, `errorResponse` (Hono's onError).
 */
export class HttpError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: string,
    message: string,
    /** role: the role a 403 needed, so a client can tell "ask for operator" from "ask for access at all". */
    readonly detail: { path?: string; retryAfterSeconds?: number; role?: Role } = {},
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/** 503 with Retry-After: nothing was lost, the sender should try again shortly. */
export const unavailable = (code: string, message: string, retryAfterSeconds = 5) =>
  new HttpError(503, code, message, { retryAfterSeconds });

export function errorResponse(err: Error, c: Context<AppEnv>): Response {
  if (err instanceof HttpError) {
    c.get("log").outcome ??= err.code;
    if (err.detail.retryAfterSeconds) c.header("Retry-After", String(err.detail.retryAfterSeconds));
    const body: Record<string, string> = { code: err.code, message: err.message };
    if (err.detail.path !== undefined) body.path = err.detail.path;
    if (err.detail.role !== undefined) body.role = err.detail.role;
    return c.json({ error: body }, err.status);
  }
  if (err instanceof HTTPException) {
    c.get("log").outcome ??= "http_exception";
    return c.json({ error: { code: "http_error", message: err.message } }, err.status);
  }
  // Anything else is our bug: log its kind (never request data), answer a generic 500.
  c.get("log").outcome = "internal_error";
  c.get("log").error = `${err.name}: ${err.message}`;
  return c.json({ error: { code: "internal_error", message: "internal error" } }, 500);
}
