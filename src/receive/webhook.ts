/**
 * The request path, in the order a request meets it:
 * receive (bounded body) → verify (HMAC, current and old secrets) → challenge? → validate →
 * enqueue (one Queue send carrying the event) → acknowledge. No D1 round trip before the answer:
 * the consumer stores the event and tells copies apart (deliver/consumer.ts). Anything slow or
 * failure-prone downstream lives on the delivery path; this answers well inside the providers'
 * 3-second deadline.
 */
import type { Handler } from "hono";
import { numberVar, type AppEnv, type Arrival, type Env, type QueuedEvent } from "../env";
import { withDeadline } from "../deadline";
import { HttpError, unavailable } from "../errors";
import { notify } from "../alerts/notify";
import type { ParsedEvent, Provider } from "../providers/provider";
import { requireSource, sourceSecrets, type Source, type SourceSecrets } from "../sources";
import { eventKey, storeEvent } from "../store/events";
import { bodyWriter } from "../store/bodies";
import { quarantine } from "../store/quarantine";
import { bounded } from "../telemetry";
import { isJsonContentType, maxBodyBytes, parseJsonBody, readBoundedBody } from "./body";
import { decodeHexSignature } from "../crypto";
import type { SecretSlot } from "../env";
import { verifyAny } from "./signature";

const DEFAULT_STORAGE_BUDGET_MS = 1500;
/** Body upload time allowed; with the storage budget, still inside the providers' 3 s. */
const DEFAULT_BODY_TIMEOUT_MS = 1000;
/**
 * Largest message we send: Queues take 128 KB per message, and count a message's metadata
 * (id, timestamp, content type: about 100 bytes) against it; the rest is headroom.
 */
export const MAX_QUEUE_MESSAGE_BYTES = 127_000;

export function receiveWebhook(): Handler<AppEnv, "/webhooks/:source"> {
  return async function receiveWebhook(c) {
    const log = c.get("log");
    const source = requireSource(c.env, c.req.param("source"));
    const { provider } = source;
    Object.assign(log, { provider: provider.name, source: source.name });

    const contentType = c.req.header("content-type") ?? null;
    if (!isJsonContentType(contentType)) {
      throw new HttpError(415, "unsupported_content_type", "Content-Type must be application/json");
    }
    const body = await readBoundedBody(
      c.req.raw,
      maxBodyBytes(c.env),
      numberVar(c.env.BODY_TIMEOUT_MS, DEFAULT_BODY_TIMEOUT_MS),
    );

    const signatures = provider.signatures(c.req.raw.headers);
    // A challenge carries no event: it is answered unsigned, and before a secret exists (the
    // operator registers the URL first). Once a secret is set, a signed challenge must verify.
    const secrets = sourceSecrets(source, c.env);
    if (signatures.length === 0 || !secrets) {
      const challenge = unverifiedChallenge(provider, body);
      if (challenge) {
        log.outcome = "challenge";
        if (!secrets) log.warning = `${source.name} signing secret is not configured; challenge answered unverified`;
        return challenge;
      }
    }
    const verifiedWith = await verify(source, secrets, signatures, c.req.raw.headers, body);

    // From here the body is genuine: whatever cannot be accepted is quarantined, never dropped.
    const receivedAt = Date.now();
    const storageBudgetMs = numberVar(c.env.STORAGE_BUDGET_MS, DEFAULT_STORAGE_BUDGET_MS);
    let signed: SignedBody;
    try {
      signed = readSigned(provider, body);
    } catch (err) {
      if (err instanceof HttpError) {
        const kept = quarantine(c.env.DB, c.env.BODIES, {
          provider: provider.name, source: source.name, reason: err.code, error: err.message, path: err.detail.path ?? null,
          contentType: contentType ?? "application/json", verifiedWith, body, receivedAt,
        }).catch(() => {
          throw unavailable("quarantine_unavailable", "could not keep the rejected payload; retry later");
        });
        await withinBudget(kept, storageBudgetMs);
        log.outcome = `quarantined:${err.code}`;
        // After the answer's write: an alert never holds up (or fails) the request.
        c.executionCtx.waitUntil(notify(c.env, [{ kind: "payload_quarantined", subject: source.name, count: 1 }]));
      }
      throw err;
    }
    if ("challenge" in signed) {
      log.outcome = "challenge";
      return signed.challenge;
    }
    const { text, event } = signed;

    // A type is whatever the signed payload says, of any length: stored and forwarded as sent,
    // bounded wherever it is only echoed (the log line, the answer, the data points).
    const typeLabel = bounded(event.type);
    Object.assign(log, { eventId: bounded(event.eventId), type: typeLabel });
    const arrival: Arrival = { ...event, provider: provider.name, source: source.name, receivedAt, verifiedWith, contentType: contentType ?? "application/json", body: text, forced: false };
    const work = acceptEvent(c.env, arrival);
    // If the budget runs out the send still finishes (or fails) in the background; a copy it
    // makes with the provider's retry is told apart by the consumer.
    c.executionCtx.waitUntil(work.catch(() => undefined));
    const { key, path } = await withinBudget(work, storageBudgetMs);
    Object.assign(log, { eventKey: key, outcome: `accepted:${path}` });
    return c.json({ id: key, eventId: event.eventId, type: typeLabel, knownType: event.knownType, status: "accepted" });
  };
}

type SignedBody = { challenge: Response } | { text: string; event: ParsedEvent };

/** Parses and validates a verified body: a signed challenge, or an event; throws 400/422 HttpError. */
export function readSigned(provider: Provider, body: Uint8Array): SignedBody {
  const { text, json } = parseJsonBody(body);
  const challenge = provider.challenge?.(json);
  return challenge ? { challenge } : { text, event: provider.parse(json) };
}

/** Returns which secret verified the body; throws 401 (bad signature or token) or 503 (the source is not configured). */
export async function verify(source: Source, secrets: SourceSecrets | null, candidates: string[], headers: Headers, body: Uint8Array): Promise<SecretSlot> {
  if (!secrets) throw unavailable("provider_not_configured", `${source.name} signing secret is not configured`, 60);
  if (secrets.token !== undefined) source.provider.authenticate?.(headers, secrets.token);
  if (candidates.length === 0) throw new HttpError(401, "missing_signature", "signature header is missing");
  const decoded = candidates.map(decodeHexSignature).filter((sig) => sig !== null);
  if (decoded.length === 0) throw new HttpError(401, "malformed_signature", "signature must be 64 hex digits (HMAC-SHA256)");
  const result = await verifyAny(body, decoded, secrets.signing);
  if (!result.ok) throw new HttpError(401, "invalid_signature", "signature does not match the body");
  return result.slot;
}

/** The answer to a URL-verification challenge, or null if the body is anything else. */
function unverifiedChallenge(provider: Provider, body: Uint8Array): Response | null {
  if (!provider.challenge) return null;
  try {
    return provider.challenge(parseJsonBody(body).json);
  } catch (err) {
    // Not JSON: not a challenge. A malformed challenge (422) is still answered as such.
    if (err instanceof HttpError && err.status === 422) throw err;
    return null;
  }
}

interface Accepted {
  /** The event's id: derived from (provider, type, provider id), so every copy gets the same. */
  key: string;
  /** queued: the message carries the event; stored: too large for one, so R2 and D1 first, then its key. */
  path: "queued" | "stored";
}

/**
 * Sends the event to the queue, body and all: the one way an event gets in, for the request path
 * and a release from quarantine alike. Copies are not detected here (that needs D1); the consumer
 * stores one row and forwards once. A body too large for a queue message is stored (R2, then D1) first
 * and its key sent. Throws 503 to make the caller retry; nothing is stored when the send fails
 * (except such a large body, which the retry, or else the reconciliation sweep, then delivers).
 */
export async function acceptEvent(env: Env, arrival: Arrival): Promise<Accepted> {
  const key = await eventKey(arrival.provider, arrival.type, arrival.eventId);
  const message = { eventKey: key, event: arrival };
  const path = fitsInMessage(message) ? "queued" : "stored";
  if (path === "stored") {
    await storeEvent(env.DB, bodyWriter(env), { ...arrival, key }).catch(() => {
      throw unavailable("storage_unavailable", "could not store the event; retry later");
    });
  }
  await env.EVENTS_QUEUE.send(path === "queued" ? message : { eventKey: key }, { contentType: "json" }).catch(() => {
    throw unavailable("queue_unavailable", "could not enqueue the event; retry later");
  });
  return { key, path };
}

const utf8 = new TextEncoder();
/** Room for the message's field names, punctuation and numbers around its strings. */
const MESSAGE_FRAME_BYTES = 512;

/**
 * Whether a message fits the queue's limit, counted as the queue counts one sent with
 * contentType json: its JSON text in UTF-8. Most are settled without serialising them: once
 * escaped, a UTF-16 unit takes at most 6 bytes (`\u00XX`).
 */
function fitsInMessage(message: QueuedEvent & { event: Arrival }): boolean {
  const { event } = message;
  const strings = [message.eventKey, event.provider, event.source, event.eventId, event.type, event.tenant ?? "", event.occurredAt ?? "", event.verifiedWith, event.contentType, event.body];
  if (strings.reduce((units, text) => units + text.length, 0) * 6 + MESSAGE_FRAME_BYTES <= MAX_QUEUE_MESSAGE_BYTES) return true;
  // The message's JSON holds the body's text, at least as long: a larger body is settled without serialising it either.
  if (event.body.length > MAX_QUEUE_MESSAGE_BYTES) return false;
  return utf8.encode(JSON.stringify(message)).byteLength <= MAX_QUEUE_MESSAGE_BYTES;
}

function withinBudget<T>(work: Promise<T>, budgetMs: number): Promise<T> {
  return withDeadline(work, budgetMs, () => unavailable("storage_timeout", `storage did not answer within ${budgetMs} ms; retry later`));
}
