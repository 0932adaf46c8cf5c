/** What the operator API and the console both do: read views of events and deliveries, replay. */
import { loadDestinations, route, type Destination } from "../deliver/destinations";
import type { Env } from "../env";
import { HttpError, unavailable } from "../errors";
import { DELIVERY_STATUSES, listDeliveries, resetStatements, type AttemptRow, type DeliveryFilter, type DeliveryRow } from "../store/deliveries";
import { bodyJson, getEvent, type EventRow } from "../store/events";

/** Deliveries one bulk replay resets and re-enqueues; call again while `more` is true. */
export const BULK_REPLAY_LIMIT = 100;

export async function requireEvent(env: Env, key: string): Promise<EventRow> {
  const row = await getEvent(env.DB, key);
  if (!row) throw new HttpError(404, "event_not_found", "no event with that id");
  return row;
}

export function configuredDestinations(env: Env): Destination[] {
  const config = loadDestinations(env);
  if (!config.ok) throw unavailable("invalid_destinations", `DESTINATIONS is invalid: ${config.errors.join("; ")}`, 60);
  return config.destinations;
}

/** Re-delivers one event to the destinations that route it now, or to the one named. */
export async function replayEvent(env: Env, row: EventRow, destination?: string): Promise<string[]> {
  const destinations = configuredDestinations(env);
  let targets: string[];
  if (destination) {
    if (!destinations.some((d) => d.name === destination)) throw new HttpError(404, "unknown_destination", `no destination named "${destination}"`);
    targets = [destination];
  } else {
    // A forced event's body may not be JSON: then no filter can match it, but type routes still do.
    targets = route(destinations, { provider: row.provider, type: row.type, envelope: bodyJson(row.body)?.json ?? null }).destinations.map((d) => d.name);
  }
  if (targets.length) await replay(env, [{ eventKey: row.key, destinations: targets }]);
  return targets;
}

/** Re-delivers the deliveries matching `filter`, at most BULK_REPLAY_LIMIT of them. */
export async function replayDeliveries(env: Env, filter: DeliveryFilter): Promise<{ replayed: number; events: number; more: boolean }> {
  configuredDestinations(env);
  const rows = await listDeliveries(env.DB, filter, BULK_REPLAY_LIMIT, null);
  const byEvent = new Map<string, string[]>();
  for (const row of rows) byEvent.set(row.event_key, [...(byEvent.get(row.event_key) ?? []), row.destination]);
  const messages = [...byEvent].map(([eventKey, destinations]) => ({ eventKey, destinations }));
  if (messages.length) await replay(env, messages);
  return { replayed: rows.length, events: messages.length, more: rows.length === BULK_REPLAY_LIMIT };
}

/** Makes the deliveries due again, then enqueues them; a 503 means "replay again". */
async function replay(env: Env, messages: { eventKey: string; destinations: string[] }[]): Promise<void> {
  const now = Date.now();
  await env.DB.batch(messages.flatMap((m) => resetStatements(env.DB, m.eventKey, m.destinations, now)));
  try {
    await env.EVENTS_QUEUE.sendBatch(messages.map((body) => ({ body, contentType: "json" as const })));
  } catch {
    throw unavailable("queue_unavailable", "deliveries were reset to pending but could not be enqueued; replay status=pending again");
  }
}

export function deliveryFilter(query: Record<string, string | undefined>): DeliveryFilter {
  if (query.status && !(DELIVERY_STATUSES as readonly string[]).includes(query.status)) {
    throw new HttpError(400, "invalid_status", `status must be one of ${DELIVERY_STATUSES.join(", ")}`);
  }
  return { status: query.status || undefined, destination: query.destination || undefined, since: timeParam(query.since, "since") };
}

const MAX_PAGE = 200;

export function limitParam(value: string | undefined, fallback = 50): number {
  if (value === undefined || value === "") return fallback;
  const limit = Number(value);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
    throw new HttpError(400, "invalid_limit", `limit must be an integer from 1 to ${MAX_PAGE}`);
  }
  return limit;
}

/** Accepts ISO 8601 (or a datetime-local value) or epoch milliseconds. */
export function timeParam(value: string | undefined, name: string): number | undefined {
  if (value === undefined || value === "") return undefined;
  const ms = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isFinite(ms)) throw new HttpError(400, "invalid_time", `${name} must be an ISO 8601 time or epoch milliseconds`);
  return ms;
}

export const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The text of a body, or null when it is not UTF-8 (only a quarantined body can be that). */
export function decodeUtf8(body: Uint8Array): string | null {
  try {
    return strictUtf8.decode(body);
  } catch {
    return null;
  }
}

export interface PayloadView {
  /** json: `payload` is the parsed body; text: the body as a string; base64: the bytes (not UTF-8). */
  payloadFormat: "json" | "text" | "base64";
  payload: unknown;
}

/** A stored body as the API shows it: parsed when it is JSON, else as it is, text or base64. */
export function payloadView(body: string | Uint8Array): PayloadView {
  if (typeof body !== "string") {
    const text = decodeUtf8(body);
    return text === null ? { payloadFormat: "base64", payload: btoa(Array.from(body, (b) => String.fromCharCode(b)).join("")) } : payloadView(text);
  }
  const parsed = bodyJson(body);
  return parsed ? { payloadFormat: "json", payload: parsed.json } : { payloadFormat: "text", payload: body };
}

/** The API's shape of an event: camelCase, ISO times, and with the body its payload (see payloadView). */
export function eventView(row: Omit<EventRow, "body"> & { body?: string }) {
  return {
    id: row.key,
    provider: row.provider,
    eventId: row.event_id,
    type: row.type,
    knownType: row.known_type === 1,
    tenant: row.tenant,
    occurredAt: row.occurred_at,
    receivedAt: iso(row.received_at),
    verifiedWith: row.verified_with,
    status: row.status,
    enqueuedAt: iso(row.enqueued_at),
    forced: row.forced === 1,
    ...(row.body === undefined ? {} : { contentType: row.content_type, ...payloadView(row.body) }),
  };
}

export function deliveryView(row: DeliveryRow, attempts?: AttemptRow[]) {
  return {
    eventId: row.event_key,
    destination: row.destination,
    status: row.status,
    attempts: row.attempts,
    lastStatusCode: row.last_status_code,
    lastError: row.last_error,
    lastAttemptAt: iso(row.last_attempt_at),
    nextAttemptAt: iso(row.next_attempt_at),
    deliveredAt: iso(row.delivered_at),
    deadLetteredAt: iso(row.dead_lettered_at),
    ...(attempts && {
      history: attempts
        .filter((a) => a.destination === row.destination)
        .map((a) => ({ attempt: a.attempt, at: iso(a.started_at), durationMs: a.duration_ms, statusCode: a.status_code, error: a.error })),
    }),
  };
}
