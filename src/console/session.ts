import type { MiddlewareHandler } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { Context } from "hono";
import type { AppEnv, Identity } from "../env";
import { accessSettings, accessSignIn, ADMIN_TOKEN_IDENTITY, adminToken } from "../admin/auth";
import { hmacSha256, tokensEqual } from "../crypto";

/**
 * The console's login session: the admin token is typed into a form once; the browser then
 * holds an HttpOnly, SameSite=Strict cookie with an expiry and an HMAC of it keyed by the
 * token. The token itself is never in a cookie or a URL, and changing ADMIN_TOKEN ends
 * every session.
 */
const COOKIE = "edgehook_console";
const SESSION_SECONDS = 8 * 3600;

async function sign(token: string, expires: number): Promise<string> {
  const mac = await hmacSha256(token, new TextEncoder().encode(`edgehook-console:${expires}`));
  return btoa(String.fromCharCode(...mac)).replace(/=+$/, "");
}

export async function startSession(c: Context<AppEnv>, token: string): Promise<void> {
  const expires = Math.floor(Date.now() / 1000) + SESSION_SECONDS;
  setCookie(c, COOKIE, `${expires}.${await sign(token, expires)}`, {
    path: "/console", httpOnly: true, secure: true, sameSite: "Strict", maxAge: SESSION_SECONDS,
  });
}

export function endSession(c: Context<AppEnv>): void {
  deleteCookie(c, COOKIE, { path: "/console", secure: true });
}

async function validSession(c: Context<AppEnv>): Promise<boolean> {
  // Unset or too short: 503, as on the admin API (a session signed with a weak token is no proof).
  const token = adminToken(c.env);
  const [expires, mac] = (getCookie(c, COOKIE) ?? "").split(".");
  if (!expires || !mac || Number(expires) < Date.now() / 1000) return false;
  return tokensEqual(mac, await sign(token, Number(expires)));
}

/** Who holds this request's sign-in, if anyone does (the sign-out records who left); never throws. */
export async function signedIn(c: Context<AppEnv>): Promise<Identity | null> {
  try {
    const access = accessSettings(c.env);
    if (access) return await accessSignIn(c, access, { cookie: true });
    return (await validSession(c)) ? ADMIN_TOKEN_IDENTITY : null;
  } catch {
    return null;
  }
}

/**
 * Pages behind the sign-in. With Cloudflare Access configured: its JWT (the header Access adds,
 * or in a browser its CF_Authorization cookie), and a role for the identity; a session made
 * with the admin token counts for nothing then. Otherwise the session; without one, the login form.
 */
export function consoleAuth(): MiddlewareHandler<AppEnv> {
  return async function consoleAuth(c, next) {
    const access = accessSettings(c.env);
    if (access) c.set("identity", await accessSignIn(c, access, { cookie: true }));
    else if (await validSession(c)) c.set("identity", ADMIN_TOKEN_IDENTITY);
    else return c.redirect("/console/login", 303);
    await next();
  };
}
