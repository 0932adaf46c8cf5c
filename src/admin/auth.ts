import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../env";
import { HttpError, unavailable } from "../errors";
import { tokensEqual } from "../receive/signature";

/**
 * Bearer-token guard for the operator API, read from ADMIN_TOKEN on each request so a
 * `wrangler secret put` takes effect without a deploy. Only the Authorization header
 * counts: a token in the query string would end up in logs and browser history.
 */
export function adminAuth(): MiddlewareHandler<AppEnv> {
  return async function adminAuth(c, next) {
    const expected = c.env.ADMIN_TOKEN;
    if (!expected) throw unavailable("admin_not_configured", "ADMIN_TOKEN is not configured", 60);
    const match = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header("authorization") ?? "");
    if (!match || !tokensEqual(match[1]!, expected)) {
      c.header("WWW-Authenticate", 'Bearer realm="edgehook admin"');
      throw new HttpError(401, "unauthorized", "a valid admin bearer token is required");
    }
    await next();
  };
}
