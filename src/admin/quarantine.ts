/**
 * Quarantine as the operator sees it (admin API and console): views, and release into events.
 *
 * A release validates the kept bytes again with today's schemas and, if they pass, accepts them
 * exactly as the request path would have (same id, the same Queue send; the consumer stores it). With `force` a payload
 * that still fails is accepted as it is, marked `forced`. The quarantine row stays, recording
 * when it was released, into which event, and whether by force.
 */
import type { Env } from "../env";
import { HttpError, unavailable } from "../errors";
import { findProvider } from "../providers";
import { isRecord, type ParsedEvent } from "../providers/provider";
import { acceptEvent, readSigned } from "../receive/webhook";
import { bodyJson, eventKey } from "../store/events";
import { getQuarantined, markReleased, unmarkReleased, type QuarantineFilter, type QuarantineRow, type QuarantineSummary } from "../store/quarantine";
import { decodeUtf8, iso, payloadView } from "./operations";
import type { QuarantinedDetailView, QuarantinedView, ReleaseView } from "./schemas";

/** `?name=true|false`; undefined when absent. */
export function flagParam(value: string | undefined, name: string): boolean | undefined {
  if (value === undefined || value === "") return undefined;
  if (value === "true" || value === "false") return value === "true";
  throw new HttpError(400, `invalid_${name}`, `${name} must be true or false`);
}

export function quarantineFilter(query: Record<string, string | undefined>): QuarantineFilter {
  return { provider: query.provider || undefined, released: flagParam(query.released, "released") };
}

export async function requireQuarantined(env: Env, id: string): Promise<QuarantineRow> {
  // Ids are positive integers; anything else cannot name a row.
  const row = /^[1-9]\d{0,14}$/.test(id) ? await getQuarantined(env.DB, env.BODIES, Number(id)) : null;
  if (!row) throw new HttpError(404, "quarantine_not_found", "no quarantined payload with that id");
  return row;
}

/** The API's shape of a quarantined payload, without its body. */
export function quarantineView(row: QuarantineSummary): QuarantinedView {
  return {
    id: row.id,
    provider: row.provider,
    source: row.source ?? row.provider,
    reason: row.reason,
    error: row.error,
    path: row.path,
    bytes: row.bytes,
    attempts: row.attempts,
    firstReceivedAt: iso(row.first_received_at),
    lastReceivedAt: iso(row.last_received_at),
    released: row.released_at === null || row.event_key === null ? null : { at: iso(row.released_at), event: row.event_key, forced: row.forced === 1 },
  };
}

/** With the body: content type, which secret verified it, its SHA-256, and the payload (see payloadView). */
export function quarantineDetailView(row: QuarantineRow): QuarantinedDetailView {
  return {
    ...quarantineView(row),
    contentType: row.content_type,
    verifiedWith: row.verified_with,
    sha256: row.body_sha256,
    ...payloadView(new Uint8Array(row.body)),
  };
}


/**
 * Releases a quarantined payload into events. Throws 422 (with the failing path) when it still
 * fails validation and `force` is not set, 422 `not_releasable` when it cannot become an event,
 * and 503 when storage or the queue fails (release again). A second release answers
 * `already_released` with the same event id.
 */
export async function releaseQuarantined(env: Env, row: QuarantineRow, force: boolean): Promise<ReleaseView> {
  const earlier = earlierRelease(row);
  if (earlier) return earlier;
  const { event, body, forced } = readReleasable(row, force);
  const releasedAt = Date.now();
  // Recorded before it is sent: of two releases at once, only the one that recorded sends (the
  // other answers already_released), so one release is one message. Ids are deterministic.
  const key = await eventKey(row.provider, event.type, event.eventId);
  const recorded = await markReleased(env.DB, row.id, key, forced, releasedAt).catch(() => {
    throw unavailable("storage_unavailable", "could not record the release; release it again");
  });
  if (!recorded) {
    const current = await getQuarantined(env.DB, env.BODIES, row.id);
    const concurrent = current && earlierRelease(current);
    if (concurrent) return concurrent;
  }
  // Received now: retention and the sweep's clock run from it; the row keeps when it first arrived.
  try {
    await acceptEvent(env, {
      ...event, provider: row.provider, source: row.source ?? row.provider, receivedAt: releasedAt, verifiedWith: row.verified_with, contentType: row.content_type, body, forced, released: true,
    });
  } catch (err) {
    // Not enqueued: the release is taken back, so repeating it works.
    await unmarkReleased(env.DB, row.id, releasedAt).catch(() => undefined);
    throw err;
  }
  return { id: key, quarantineId: row.id, forced, releasedAt: new Date(releasedAt).toISOString(), status: "accepted" };
}

function earlierRelease(row: QuarantineRow): ReleaseView | null {
  if (row.released_at === null || row.event_key === null) return null;
  return { id: row.event_key, quarantineId: row.id, forced: row.forced === 1, releasedAt: new Date(row.released_at).toISOString(), status: "already_released" };
}

interface Releasable {
  event: ParsedEvent;
  body: string;
  forced: boolean;
}

/** Validated as the request path validates; failing that, with `force`, taken as it is. */
function readReleasable(row: QuarantineRow, force: boolean): Releasable {
  const bytes = new Uint8Array(row.body);
  try {
    return { ...validate(row.provider, bytes), forced: false };
  } catch (err) {
    if (!force || !(err instanceof HttpError)) throw err;
    return { ...asItIs(row, bytes), forced: true };
  }
}

function validate(providerName: string, bytes: Uint8Array): Omit<Releasable, "forced"> {
  const provider = findProvider(providerName);
  if (!provider) throw notReleasable(`no provider named "${providerName}" is registered now; only force=true can release it`);
  let signed: ReturnType<typeof readSigned>;
  try {
    signed = readSigned(provider, bytes);
  } catch (err) {
    // The release request is fine; the payload in it is not: 422 for every kind of failure.
    if (err instanceof HttpError) throw new HttpError(422, err.code, `still fails validation: ${err.message}`, { path: err.detail.path });
    throw err;
  }
  if ("challenge" in signed) throw notReleasable("the payload is a URL-verification challenge, not an event");
  return { event: signed.event, body: signed.text };
}

/**
 * Where the providers' parse() finds an event's id and type (Seismic v2, Seismic legacy, Zuddl;
 * a new provider's fields belong here too), read without validating. A payload whose envelope is
 * fine but whose data drifted (the usual case) gets the id a valid delivery of it would get, so a
 * later valid copy is a duplicate, not a second event.
 */
const ID_FIELDS = ["id", "Id", "actionId"];
const TYPE_FIELDS = ["version", "Version", "action"];

function asItIs(row: QuarantineRow, bytes: Uint8Array): Omit<Releasable, "forced"> {
  const text = decodeUtf8(bytes);
  if (text === null) {
    throw notReleasable("the body is not valid UTF-8: events are stored and forwarded as text, and re-encoding it would forward bytes the provider did not sign");
  }
  const json = bodyJson(text)?.json;
  const envelope = isRecord(json) ? json : {};
  const field = (names: string[]) => names.map((name) => envelope[name]).find((value): value is string => typeof value === "string" && value !== "");
  return {
    event: {
      // Without an id in it, the body's hash: the same bytes always make the same event.
      eventId: field(ID_FIELDS) ?? `sha256:${row.body_sha256}`,
      type: field(TYPE_FIELDS) ?? "unknown",
      knownType: false,
      tenant: null,
      occurredAt: null,
    },
    body: text,
  };
}

const notReleasable = (message: string) => new HttpError(422, "not_releasable", message);
