/**
 * Forwards one stored event to one destination: the original body byte for byte, signed
 * in the Standard Webhooks format so receivers can verify it with any Standard Webhooks
 * library, and classified so the consumer knows whether to retry.
 */
import { hmacSha256 } from "../crypto";
import type { Destination } from "./destinations";

export interface ForwardedEvent {
  key: string;
  provider: string;
  type: string;
  contentType: string;
  body: string;
}

export type ForwardResult =
  | { outcome: "delivered"; statusCode: number; durationMs: number }
  | { outcome: "gone"; statusCode: 410; durationMs: number; error: string }
  | { outcome: "retry"; statusCode: number | null; durationMs: number; error: string; retryAfterSeconds: number | null };

const encoder = new TextEncoder();
/** Event types come from payloads: only plain tokens may become a header value. */
const SAFE_HEADER_TOKEN = /^[A-Za-z0-9._:/-]{1,200}$/;

export async function signStandardWebhook(key: Uint8Array, id: string, timestamp: number, body: string): Promise<string> {
  const mac = await hmacSha256(key, encoder.encode(`${id}.${timestamp}.${body}`));
  return `v1,${btoa(String.fromCharCode(...mac))}`;
}

export async function forward(event: ForwardedEvent, destination: Destination): Promise<ForwardResult> {
  const timestamp = Math.floor(Date.now() / 1000);
  const headers = new Headers({
    "content-type": event.contentType,
    "user-agent": "edgehook",
    "webhook-id": event.key,
    "webhook-timestamp": String(timestamp),
    "x-edgehook-provider": event.provider,
    "x-edgehook-event-type": SAFE_HEADER_TOKEN.test(event.type) ? event.type : encodeURIComponent(event.type).slice(0, 200),
  });
  // The destination's own headers (their names are never ones set above: see destinations.ts).
  for (const [name, value] of destination.headers) headers.set(name, value);
  if (destination.signingKey) {
    headers.set("webhook-signature", await signStandardWebhook(destination.signingKey, event.key, timestamp, event.body));
  }
  const started = Date.now();
  let response: Response;
  try {
    response = await fetch(destination.url, {
      method: "POST",
      headers,
      body: event.body,
      // A redirect is a failure, not a new target: forwards go to configured URLs only.
      redirect: "manual",
      signal: AbortSignal.timeout(destination.timeoutMs),
    });
  } catch (err) {
    const durationMs = Date.now() - started;
    const timedOut = err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError");
    const error = timedOut ? `timed out after ${destination.timeoutMs} ms` : `network error: ${err instanceof Error ? err.message : String(err)}`;
    return { outcome: "retry", statusCode: null, durationMs, error, retryAfterSeconds: null };
  }
  // The body is not needed; release the connection.
  await response.body?.cancel().catch(() => undefined);
  const durationMs = Date.now() - started;
  const statusCode = response.status;
  if (statusCode >= 200 && statusCode < 300) return { outcome: "delivered", statusCode, durationMs };
  if (statusCode === 410) return { outcome: "gone", statusCode, durationMs, error: "410 Gone: the destination asked for no further deliveries of this event" };
  const retryAfterSeconds = statusCode === 429 || statusCode === 503 ? parseRetryAfter(response.headers.get("retry-after")) : null;
  return { outcome: "retry", statusCode, durationMs, error: `HTTP ${statusCode}`, retryAfterSeconds };
}

/** Retry-After as seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | null {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, Math.ceil((at - now) / 1000)) : null;
}
