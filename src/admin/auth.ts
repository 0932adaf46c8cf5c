import type { Context, MiddlewareHandler } from "hono";
import type { AppEnv, Env, Identity } from "../env";
import { HttpError, unavailable } from "../errors";
import { tokensEqual } from "../crypto";
import { clientOf, countFailure, refuseIfLocked } from "../throttle";
import { accessConfig, accessIdentity, type AccessSettings } from "./access";
import { forbidden, roleOf, roleRules } from "./roles";

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

/** The admin token is one shared secret: whoever holds it is an operator. */
export const ADMIN_TOKEN_IDENTITY: Identity = { name: "admin-token", role: "operator", via: "admin-token" };

/** Whether Cloudflare Access is configured, and correctly (ACCESS_*, OPERATORS, VIEWERS); /healthz reports both, never a value. */
export function accessState(env: Env): { configured: boolean; valid: boolean } {
  const access = accessConfig(env);
  return { configured: access.state !== "off", valid: access.state === "off" || (access.state === "on" && roleRules(env).ok) };
}

/**
 * The Access settings, or null when Access is off (the admin token signs in). A half or wrong
 * configuration closes the admin API and the console (503 naming the variable) rather than
 * falling back to the token: whoever set ACCESS_* meant the token to stop working.
 */
export function accessSettings(env: Env): AccessSettings | null {
  const access = accessConfig(env);
  if (access.state === "off") return null;
  if (access.state === "invalid") throw unavailable("access_misconfigured", access.error, 60);
  const rules = roleRules(env);
  if (!rules.ok) throw unavailable("access_misconfigured", rules.error, 60);
  return access;
}

/** Signs in through Access: a valid JWT, then a role for its identity (none: 403). */
export async function accessSignIn(c: Context<AppEnv>, settings: AccessSettings, options: { cookie: boolean }): Promise<Identity> {
  const name = await accessIdentity(c, settings, options);
  const rules = roleRules(c.env);
  const role = rules.ok ? roleOf(rules, name) : null;
  if (!role) throw forbidden("viewer");
  return { name, role, via: "access" };
}

/**
 * The operator API's guard. With Cloudflare Access configured, only an Access JWT signs in (the
 * admin token is refused: see README "Signing in with Cloudflare Access"); otherwise the bearer
 * token, read from ADMIN_TOKEN on each request so a `wrangler secret put` takes effect without
 * a deploy. Only the Authorization header counts: a token in the query string would end up in
 * logs and browser history. Wrong tokens are throttled per client (throttle.ts). The identity
 * and its role are left on the context for the routes (and their role checks) to read.
 */
export function adminAuth(): MiddlewareHandler<AppEnv> {
  return async function adminAuth(c, next) {
    const access = accessSettings(c.env);
    if (access) {
      try {
        c.set("identity", await accessSignIn(c, access, { cookie: false }));
      } catch (err) {
        if (err instanceof HttpError && err.status === 401) c.header("WWW-Authenticate", 'Cf-Access-Jwt-Assertion realm="edgehook admin"');
        throw err;
      }
    } else {
      await checkBearerToken(c);
      c.set("identity", ADMIN_TOKEN_IDENTITY);
    }
    await next();
  };
}

async function checkBearerToken(c: Context<AppEnv>): Promise<void> {
  const expected = adminToken(c.env);
  const client = clientOf(c.req.header("cf-connecting-ip"));
  refuseIfLocked(client);
  const match = /^Bearer\s+(\S+)\s*$/i.exec(c.req.header("authorization") ?? "");
  if (!match || !tokensEqual(match[1]!, expected)) {
    if (match) await countFailure(c.env, client);
    c.header("WWW-Authenticate", 'Bearer realm="edgehook admin"');
    throw new HttpError(401, "unauthorized", "a valid admin bearer token is required");
  }
}
