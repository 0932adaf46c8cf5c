/**
 * Slows down guessing the admin token, through the operator API's bearer guard and the console's
 * sign-in form alike: per client, at most MAX_FAILURES wrong tokens a WINDOW_SECONDS window, then
 * 429 with Retry-After. Nothing is written to D1: a flood of guesses from many addresses must not
 * become a flood of write transactions on the one D1 writer the consumer needs. The count is kept
 * by Cloudflare's rate limiting binding (AUTH_FAILURES, `[[ratelimits]]` in wrangler.toml; it
 * runs under `wrangler dev` too), shared by the isolates of a Cloudflare location. Without that
 * binding each isolate keeps its own count, the same way: weaker (per isolate), never absent.
 *
 * Only a presented, wrong token counts (a request with none is not a guess), and a success does
 * not use up the limit. The binding cannot be asked without counting, so a client that has gone
 * past the limit is remembered in this isolate until its window ends, and refused before its
 * token is looked at: even the right token then learns nothing. Another isolate learns of it at
 * the client's next failure there. The submitted token is never kept anywhere.
 */
import type { Env } from "./env";
import { HttpError } from "./errors";

/** The AUTH_FAILURES binding's `simple` limit in wrangler.toml; the isolate fallback uses the same. */
export const MAX_FAILURES = 5;
/** Its `period`: the binding accepts only 10 or 60 seconds. */
export const WINDOW_SECONDS = 60;
/** Clients remembered per isolate; past it, entries whose window has ended are dropped first. */
const MAX_TRACKED = 10_000;

/**
 * Who is guessing: CF-Connecting-IP, set by Cloudflare's edge (a client cannot forge it there).
 * An IPv6 address counts by its /64, which one subscriber usually holds whole. Without the
 * header (local development) every attempt shares one count.
 */
export function clientOf(ip: string | undefined): string {
  if (!ip) return "unknown";
  if (!ip.includes(":")) return ip;
  const [head = "", tail] = ip.toLowerCase().split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return `${groups.slice(0, 4).map((group) => group.replace(/^0+(?=.)/, "")).join(":")}::/64`;
}

/** Clients past the limit, and until when (ms), as this isolate has seen. */
const lockedUntil = new Map<string, number>();

/** Refuses a client that has used up its failures (call it before looking at the token). */
export function refuseIfLocked(client: string, now = Date.now()): void {
  const until = lockedUntil.get(client);
  if (until === undefined) return;
  if (until > now) throw tooManyAttempts(until - now);
  lockedUntil.delete(client);
}

/** Counts one wrong token; throws 429 when it takes the client past the limit. */
export async function countFailure(env: Env, client: string, now = Date.now()): Promise<void> {
  // A limiter that cannot answer refuses: guesses never go through uncounted.
  const { success } = await (env.AUTH_FAILURES ?? isolateLimiter).limit({ key: client }).catch(() => ({ success: false }));
  if (success) return;
  const until = now + WINDOW_SECONDS * 1000;
  remember(lockedUntil, client, until, (at) => at <= now);
  throw tooManyAttempts(until - now);
}

function tooManyAttempts(waitMs: number): HttpError {
  return new HttpError(429, "too_many_attempts", "too many wrong admin tokens from this address; try again later", {
    retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)),
  });
}

/** The binding's fixed window (aligned to the clock), kept in this isolate's memory. */
const windows = new Map<string, { window: number; count: number }>();
const isolateLimiter: RateLimit = {
  async limit({ key }) {
    const window = Math.floor(Date.now() / (WINDOW_SECONDS * 1000));
    const seen = windows.get(key);
    const count = seen?.window === window ? seen.count + 1 : 1;
    remember(windows, key, { window, count }, (entry) => entry.window !== window);
    return { success: count <= MAX_FAILURES };
  },
};

/** Sets `key`, keeping the map bounded: ended entries go first, and all of them if it is still full. */
function remember<T>(map: Map<string, T>, key: string, value: T, ended: (value: T) => boolean): void {
  if (map.size >= MAX_TRACKED && !map.has(key)) {
    for (const [k, v] of map) if (ended(v)) map.delete(k);
    if (map.size >= MAX_TRACKED) map.clear();
  }
  map.set(key, value);
}
