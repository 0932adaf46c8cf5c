/**
 * Slows down guessing the admin token through the sign-in form: per client address, at most
 * MAX_FAILED_LOGINS failures in a LOGIN_WINDOW_MS window, then 429 until the window ends; a
 * success clears the count. Kept in D1, not in memory, because every isolate must see the same
 * count. The submitted token is never stored, only who tried, how often and since when.
 */
import { unavailable } from "../errors";
import { countLoginAttempt } from "../store/logins";

const MAX_FAILED_LOGINS = 5;
const LOGIN_WINDOW_MS = 15 * 60_000;

/**
 * Who is signing in: CF-Connecting-IP, set by Cloudflare's edge (a client cannot forge it there).
 * An IPv6 address counts by its /64, which one subscriber usually holds whole. Without the
 * header (local development) every attempt shares one count.
 */
export function loginClient(ip: string | undefined): string {
  if (!ip) return "unknown";
  if (!ip.includes(":")) return ip;
  const [head = "", tail] = ip.toLowerCase().split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  return `${groups.slice(0, 4).map((group) => group.replace(/^0+(?=.)/, "")).join(":")}::/64`;
}

/** Counts a sign-in attempt; the seconds to wait when the client has used up its failures, else null. */
export async function loginAttempt(db: D1Database, client: string): Promise<number | null> {
  const now = Date.now();
  const count = await countLoginAttempt(db, client, now, LOGIN_WINDOW_MS).catch(() => {
    // Refuse rather than let guesses through uncounted.
    throw unavailable("storage_unavailable", "could not check sign-in attempts; try again shortly");
  });
  // The count includes this attempt, which is refused only once MAX_FAILED_LOGINS came before it.
  if (count.failures <= MAX_FAILED_LOGINS) return null;
  return Math.max(1, Math.ceil((count.window_started_at + LOGIN_WINDOW_MS - now) / 1000));
}
