/** What the operator API and the console both do: read views of events and deliveries, replay. */
import { loadDestinations, route, type Destination } from "../deliver/destinations";
import { numberVar, searchEnabled, type Env } from "../env";
import { HttpError, unavailable } from "../errors";
import { bindingStates, sourceSecrets, type Source } from "../sources";
import { DELIVERY_STATUSES, listDeliveries, replayStatements, type AttemptRow, type DeliveryCursor, type DeliveryFilter, type DeliveryRow } from "../store/deliveries";
import { bodyJson, getEvent, sourceOf, type EventFilter, type EventRow, type EventSummary } from "../store/events";
import {
  BULK_REPLAY_LIMIT, DEFAULT_PAGE, MAX_PAGE, REPLAYABLE_STATUSES,
  type AttemptView, type DeliveryView, type EventDetailView, type EventView, type PayloadView, type SourceView,
} from "./schemas";

const DEFAULT_RECONCILE_AFTER_SECONDS = 900;

export async function requireEvent(env: Env, key: string): Promise<EventRow> {
  const row = await getEvent(env.DB, env.BODIES, key);
  if (!row) throw new HttpError(404, "event_not_found", "no event with that id");
  return row;
}

export function configuredDestinations(env: Env): Destination[] {
  const config = loadDestinations(env);
  if (!config.ok) throw unavailable("invalid_destinations", `DESTINATIONS is invalid: ${config.errors.join("; ")}`, 60);
  return config.destinations;
}

/** Re-delivers one event to the destinations that route it now, or to the one named (pinned: sent even if not routed). */
export async function replayEvent(env: Env, row: EventRow, destination?: string): Promise<string[]> {
  const destinations = configuredDestinations(env);
  let targets: string[];
  if (destination) {
    requireDestination(destinations, destination);
    targets = [destination];
  } else {
    // A forced event's body may not be JSON: then no filter can match it, but type routes still do.
    targets = route(destinations, { provider: row.provider, source: sourceOf(row), type: row.type, envelope: bodyJson(row.body)?.json ?? null }).destinations.map((d) => d.name);
  }
  if (targets.length) await replay(env, [{ eventKey: row.key, destinations: targets }], destination !== undefined);
  return targets;
}

function requireDestination(destinations: Destination[], name: string): void {
  if (!destinations.some((d) => d.name === name)) throw new HttpError(404, "unknown_destination", `no destination named "${name}" in DESTINATIONS`);
}

/**
 * Where a bulk replay stands: its filter, the time its set was fixed (the first call), and the
 * last delivery it replayed. Rows a replay resets are updated after `until`, so no page selects
 * a delivery twice, even one that failed again meanwhile.
 */
interface ReplayCursor {
  status: string;
  destination: string | null;
  since: number | null;
  until: number;
  after: DeliveryCursor;
}

export interface BulkReplay {
  status: (typeof REPLAYABLE_STATUSES)[number];
  destination?: string;
  since?: number;
  limit: number;
  cursor: string | null;
}

/** Reads a bulk replay's query: an explicit, known status is required (a missing filter never means "everything"). */
export function bulkReplayQuery(query: Record<string, string | undefined>): BulkReplay {
  const status = REPLAYABLE_STATUSES.find((s) => s === query.status);
  if (!status) {
    throw new HttpError(400, "invalid_status", `status is required for a replay: one of ${REPLAYABLE_STATUSES.join(", ")}`);
  }
  const limit = limitParam(query.limit, BULK_REPLAY_LIMIT, BULK_REPLAY_LIMIT);
  return { status, destination: query.destination || undefined, since: timeParam(query.since, "since"), limit, cursor: query.cursor || null };
}

/** Re-delivers one page of the deliveries a bulk replay selects, pinned to their destinations. */
export async function replayDeliveries(env: Env, request: BulkReplay): Promise<{ replayed: number; events: number; more: boolean; nextCursor: string | null }> {
  const configured = configuredDestinations(env);
  if (request.destination) requireDestination(configured, request.destination);
  const resumed = request.cursor ? readReplayCursor(request.cursor, request) : null;
  const until = resumed?.until ?? Date.now();
  const filter = {
    status: request.status, destination: request.destination, since: request.since, until,
    // A destination removed from DESTINATIONS is never replayed to: its rows would wait forever.
    destinations: configured.map((d) => d.name),
  };
  const rows = await listDeliveries(env.DB, filter, request.limit, resumed?.after ?? null);
  const byEvent = new Map<string, string[]>();
  for (const row of rows) byEvent.set(row.event_key, [...(byEvent.get(row.event_key) ?? []), row.destination]);
  const messages = [...byEvent].map(([eventKey, destinations]) => ({ eventKey, destinations }));
  if (messages.length) await replay(env, messages, true);
  const last = rows[rows.length - 1];
  const more = rows.length === request.limit && last !== undefined;
  const next: ReplayCursor | null = more
    ? { status: request.status, destination: request.destination ?? null, since: request.since ?? null, until, after: [last.updated_at, last.event_key, last.destination] }
    : null;
  return { replayed: rows.length, events: messages.length, more, nextCursor: next && btoa(JSON.stringify(next)) };
}

function readReplayCursor(cursor: string, request: BulkReplay): ReplayCursor {
  let value: Partial<ReplayCursor> | null = null;
  try {
    value = JSON.parse(atob(cursor)) as Partial<ReplayCursor>;
  } catch {
    // reported below
  }
  const after = value?.after;
  if (!value || typeof value.until !== "number" || !Array.isArray(after) || typeof after[0] !== "number" || typeof after[1] !== "string" || typeof after[2] !== "string") {
    throw new HttpError(400, "invalid_cursor", "cursor is not one this API returned");
  }
  if (value.status !== request.status || value.destination !== (request.destination ?? null) || value.since !== (request.since ?? null)) {
    throw new HttpError(400, "cursor_mismatch", "this cursor belongs to a replay with another status, destination or since; repeat that replay's parameters with it");
  }
  return value as ReplayCursor;
}

/** Makes the deliveries due again, then enqueues their events. */
async function replay(env: Env, targets: { eventKey: string; destinations: string[] }[], pinned: boolean): Promise<void> {
  const now = Date.now();
  await env.DB.batch(targets.flatMap((t) => replayStatements(env.DB, t.eventKey, t.destinations, pinned, now)));
  try {
    await env.EVENTS_QUEUE.sendBatch(targets.map(({ eventKey }) => ({ body: { eventKey }, contentType: "json" as const })));
  } catch {
    const after = numberVar(env.RECONCILE_AFTER_SECONDS, DEFAULT_RECONCILE_AFTER_SECONDS);
    throw unavailable(
      "queue_unavailable",
      `the deliveries were reset to pending but could not be enqueued now; the reconciliation sweep enqueues them after ${after} s without progress (at its next cron run), or replay each event again`,
    );
  }
}

/** The event list's filters, as the operator API and the console's event log take them. */
export function eventFilter(env: Env, query: Record<string, string | undefined>): EventFilter {
  if (query.q?.trim() && !searchEnabled(env)) {
    throw new HttpError(400, "search_disabled", 'payload search is off on this gateway: set the SEARCH var to "on" (wrangler.toml [vars]) and deploy; the cron then builds the index');
  }
  return {
    provider: query.provider,
    source: query.source,
    type: query.type,
    status: query.status,
    tenant: query.tenant,
    eventId: query.eventId,
    since: timeParam(query.since, "since"),
    until: timeParam(query.until, "until"),
    q: query.q,
  };
}

export function deliveryFilter(query: Record<string, string | undefined>): DeliveryFilter {
  if (query.status && !(DELIVERY_STATUSES as readonly string[]).includes(query.status)) {
    throw new HttpError(400, "invalid_status", `status must be one of ${DELIVERY_STATUSES.join(", ")}`);
  }
  return { status: query.status || undefined, destination: query.destination || undefined, since: timeParam(query.since, "since") };
}

export function limitParam(value: string | undefined, fallback = DEFAULT_PAGE, most = MAX_PAGE): number {
  if (value === undefined || value === "") return fallback;
  const limit = Number(value);
  if (!Number.isInteger(limit) || limit < 1 || limit > most) {
    throw new HttpError(400, "invalid_limit", `limit must be an integer from 1 to ${most}`);
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

export function iso(ms: number): string;
export function iso(ms: number | null): string | null;
export function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The text of a body, or null when it is not UTF-8 (only a quarantined body can be that). */
export function decodeUtf8(body: Uint8Array): string | null {
  try {
    return strictUtf8.decode(body);
  } catch {
    return null;
  }
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

/** The API's shape of an event: camelCase, ISO times, without its body (see eventDetailView). */
export function eventView(row: EventSummary): EventView {
  return {
    id: row.key,
    provider: row.provider,
    source: sourceOf(row),
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
    /** Why the last delivery round could not run (an error, or DESTINATIONS invalid); null once one ran. */
    lastError: row.last_error,
    lastHandledAt: iso(row.progress_at),
  };
}

/** A source as the operator API and the console show it: binding names and whether each is set, never a value. */
export function sourceView(source: Source, env: Env): SourceView {
  return {
    name: source.name,
    provider: source.provider.name,
    builtIn: source.builtIn,
    configured: sourceSecrets(source, env) !== null,
    bindings: bindingStates(source, env),
  };
}

/** An event with its body as its payload (see payloadView), and each delivery with its attempts. */
export function eventDetailView(row: EventRow, deliveries: DeliveryRow[], attempts: AttemptRow[]): EventDetailView {
  return {
    ...eventView(row),
    contentType: row.content_type,
    ...payloadView(row.body),
    deliveries: deliveries.map((d) => ({ ...deliveryView(d), history: attempts.filter((a) => a.destination === d.destination).map(attemptView) })),
  };
}

export function deliveryView(row: DeliveryRow): DeliveryView {
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
    pinned: row.pinned === 1,
  };
}

const attemptView = (a: AttemptRow): AttemptView => ({ attempt: a.attempt, at: iso(a.started_at), durationMs: a.duration_ms, statusCode: a.status_code, error: a.error, transformCode: a.transform_code });
