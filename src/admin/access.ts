/**
 * Sign-in through Cloudflare Access: Access authenticates people (and service tokens) at the edge
 * and hands the Worker a JWT it signed. The Worker checks it again itself, because the Worker is
 * also reachable where Access may not stand in front of it (workers.dev, another route).
 */
import type { Context } from "hono";
import { getCookie } from "hono/cookie";
import { createRemoteJWKSet, errors, jwtVerify, type JWTVerifyGetKey } from "jose";
import type { AppEnv, Env } from "../env";
import { HttpError, unavailable } from "../errors";

export interface AccessSettings {
  /** The team's origin: the JWT's `iss`, and where its keys are published. */
  teamOrigin: string;
  /** The Access application's AUD tag: the JWT's `aud`. */
  audience: string;
}

export type AccessConfig = { state: "off" } | ({ state: "on" } & AccessSettings) | { state: "invalid"; error: string };

/** Loopback hosts, over which plain http is accepted so the whole flow can be tried without an account. */
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);

/** ACCESS_TEAM_DOMAIN and ACCESS_AUD: both (on), neither (off), or what is wrong, naming the variable, never its value. */
export function accessConfig(env: Env): AccessConfig {
  const team = (env.ACCESS_TEAM_DOMAIN ?? "").trim().replace(/\/$/, "");
  const audience = (env.ACCESS_AUD ?? "").trim();
  if (!team && !audience) return { state: "off" };
  if (!team || !audience) {
    const missing = team ? "ACCESS_AUD" : "ACCESS_TEAM_DOMAIN";
    return { state: "invalid", error: `${missing} is not set: set both ACCESS_TEAM_DOMAIN and ACCESS_AUD (Cloudflare Access), or neither (the admin token)` };
  }
  if (!isTeamOrigin(team)) {
    return { state: "invalid", error: "ACCESS_TEAM_DOMAIN must be the team's origin, https://<team>.cloudflareaccess.com (or http://127.0.0.1:<port> to try it locally)" };
  }
  return { state: "on", teamOrigin: team, audience };
}

function isTeamOrigin(value: string): boolean {
  if (!URL.canParse(value)) return false;
  const url = new URL(value);
  // The origin alone: `iss` is compared as a string, so a path or a query would never match it.
  if (url.origin !== value) return false;
  return url.protocol === "https:" || (url.protocol === "http:" && LOOPBACK_HOSTS.has(url.hostname));
}

/**
 * One key set per team origin per isolate. jose caches the keys for `cacheMaxAge` and fetches
 * them again when a token names a key it does not hold (Access rotates its keys), at most once
 * per `cooldownDuration`, so tokens naming made-up keys cannot make the Worker hammer Access.
 */
const keySets = new Map<string, JWTVerifyGetKey>();
const KEYS_TIMEOUT_MS = 3000;
const KEYS_COOLDOWN_MS = 30_000;
const KEYS_MAX_AGE_MS = 10 * 60_000;

function keySetOf(teamOrigin: string): JWTVerifyGetKey {
  let keySet = keySets.get(teamOrigin);
  if (!keySet) {
    keySet = createRemoteJWKSet(new URL("/cdn-cgi/access/certs", teamOrigin), {
      timeoutDuration: KEYS_TIMEOUT_MS,
      cooldownDuration: KEYS_COOLDOWN_MS,
      cacheMaxAge: KEYS_MAX_AGE_MS,
    });
    keySets.set(teamOrigin, keySet);
  }
  return keySet;
}

/** The team's keys; an endpoint that cannot be reached or answers no key set is our outage (503), not the caller's fault. */
function teamKeys(teamOrigin: string): JWTVerifyGetKey {
  const keySet = keySetOf(teamOrigin);
  return async (header, token) => {
    try {
      return await keySet(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
      throw unavailable("access_keys_unavailable", "Cloudflare Access's signing keys could not be fetched; try again shortly");
    }
  };
}

const unauthorized = (code: string, message: string) => new HttpError(401, code, message);

/** Why a token was refused, as an HttpError; anything that is not jose's judgement of the token passes through. */
function refusal(err: unknown): unknown {
  if (err instanceof errors.JWTExpired) return unauthorized("access_token_expired", "the Access token has expired: sign in again");
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === "aud") return unauthorized("access_token_wrong_audience", "the Access token is for another Access application (aud is not ACCESS_AUD)");
    if (err.claim === "iss") return unauthorized("access_token_wrong_issuer", "the Access token was issued by another team (iss is not ACCESS_TEAM_DOMAIN)");
    return unauthorized("access_token_invalid", `the Access token's ${err.claim} claim is not acceptable`);
  }
  if (err instanceof errors.JWKSNoMatchingKey) return unauthorized("access_key_unknown", "the Access token was signed with a key the team does not publish");
  if (err instanceof errors.JWSSignatureVerificationFailed) return unauthorized("access_token_invalid", "the Access token's signature does not verify");
  if (err instanceof errors.JOSEError) return unauthorized("access_token_invalid", "not a valid Access token");
  return err;
}

/**
 * The caller's identity from its Access JWT: the `Cf-Access-Jwt-Assertion` header Access adds to
 * every request it lets through or, for the console in a browser, the `CF_Authorization` cookie.
 * Signature (RS256, the team's published keys), `aud`, `iss` and expiry are all checked.
 * The identity is the `email` claim, or a service token's `common_name` (its client id).
 */
export async function accessIdentity(c: Context<AppEnv>, settings: AccessSettings, { cookie }: { cookie: boolean }): Promise<string> {
  const token = c.req.header("cf-access-jwt-assertion") ?? (cookie ? getCookie(c, "CF_Authorization") : undefined);
  if (!token) {
    throw unauthorized("access_token_missing", "sign in through Cloudflare Access: no Cf-Access-Jwt-Assertion header (the admin token is not accepted while Access is configured)");
  }
  let claims: Record<string, unknown>;
  try {
    ({ payload: claims } = await jwtVerify(token, teamKeys(settings.teamOrigin), {
      issuer: settings.teamOrigin,
      audience: settings.audience,
      algorithms: ["RS256"],
      // jose checks exp only when present; a token without one would never expire.
      requiredClaims: ["exp"],
    }));
  } catch (err) {
    throw refusal(err);
  }
  const name = [claims.email, claims.common_name].find((claim): claim is string => typeof claim === "string" && claim !== "");
  if (!name) throw unauthorized("access_token_no_identity", "the Access token carries neither an email nor a service token's common_name");
  return name;
}
