import type { MiddlewareHandler } from "hono";
import type { AppEnv, Env } from "../env";
import { HttpError, unavailable } from "../errors";
import { tokensEqual } from "../crypto";
import { clientOf, countFailure, refuseIfLocked } from "../throttle";

/**
 * The shortest ADMIN_TOKEN accepted: 32 characters (128 bits as hex, more as random text), out of
 * reach of guessing even at the throttle's limit across every address an attacker holds.
 */
export const MIN_ADMIN_TOKEN_LENGTH = 32;

/** Whether ADMIN_TOKEN is set, and long enough (/healthz reports both, never the token). */
export function adminTokenState(env: Env): { configured: boolean; valid: boolean } {
  const token = env.ADMIN_TOKEN ?? "";
  return { configured: token !== "", valid: token === "" || token.length >= MIN_ADMIN_TOKEN_LENGTH };
}

/** ADMIN_TOKEN, or 503 when it is unset or too short to resist guessing (the API and the console are then closed). */
export function adminToken(env: Env): string {
  const { configured, valid } = adminTokenState(env);
  if (!configured) throw unavailable("admin_not_configured", "ADMIN_TOKEN is not configured", 60);
  if (!valid) {
    throw unavailable("admin_token_too_short", `ADMIN_TOKEN is shorter than ${MIN_ADMIN_TOKEN_LENGTH} characters; set a longer one (e.g. openssl rand -hex 32)`, 60);
  }
  return env.ADMIN_TOKEN!;
}

/**
 * Bearer-token guard for the operator API, read from ADMIN_TOKEN on each request so a
 * `wrangler secret put` takes effect without a deploy. Only the Authorization header
 * counts: a token in the query string would end up in logs and browser history. Wrong
 * tokens are throttled per client (throttle.ts).
 */
export function adminAuth(): MiddlewareHandler<AppEnv> {
  return async function adminAuth(c, next) {
    const expected = adminToken(c.env);
    const client = clientOf(c.req.header("cf-connecting-ip"));
    refuseIfLocked(client);
    const match = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header("authorization") ?? "");
    if (!match || !tokensEqual(match[1]!, expected)) {
      if (match) await countFailure(c.env, client);
      c.header("WWW-Authenticate", 'Bearer realm="edgehook admin"');
      throw new HttpError(401, "unauthorized", "a valid admin bearer token is required");
    }
    await next();
  };
}
