/**
 * The operator API's routes described once: parameters, the success answer, and every error code
 * by status. GET /admin/openapi.json is generated from this table and the view schemas
 * (schemas.ts); a test checks the table against the routes registered on the admin router, and
 * validates every admin response the test suite produces against the generated document.
 *
 * Adding a route: register it in routes.ts, add its entry to ADMIN_API (its answer's schema in
 * schemas.ts when a view builds it), and a test that calls it.
 */
import * as T from "@sinclair/typebox";
import type { Context } from "hono";
import { routePath } from "hono/route";
import type { AppEnv, Role } from "../env";
import { AUDIT_ACTIONS } from "../store/audit";
import { DELIVERY_STATUSES } from "../store/deliveries";
import {
  AlertsView, AuditRecordView, BULK_REPLAY_LIMIT, DEFAULT_PAGE, DeadLetterView, DeliveryView, DestinationConfigView, DestinationControlView, DestinationView, EVENT_STATUSES, EventDetailView, EventView, MAX_PAGE,
  Nullable, PreviewRequest, PreviewView, QuarantinedDetailView, QuarantinedView, REPLAYABLE_STATUSES, ReleaseView, SourceView, StatsView, StringEnum,
} from "./schemas";

interface Param {
  schema: T.TSchema;
  description: string;
  required?: boolean;
  /** The 400 error code a value the handler cannot read is answered with. */
  invalid?: string;
}

type ErrorStatus = 400 | 404 | 413 | 422 | 503;

interface Operation {
  operationId: string;
  /** The role a caller needs (admin/roles.ts): viewers read, operators also change state. The router enforces this very value. */
  role: Role;
  summary: string;
  description?: string;
  path?: Record<string, Param>;
  query?: Record<string, Param>;
  /** A JSON request body, when the route reads one. */
  requestBody?: T.TSchema;
  status: 200 | 202;
  response: T.TSchema;
  /** The success answer's media type, when it is not JSON. */
  mediaType?: string;
  /** Error codes beyond those of the parameters and the sign-in (every route answers those). */
  errors?: Partial<Record<ErrorStatus, string[]>>;
}

const limit = (max = MAX_PAGE): Param => ({
  schema: T.Integer({ minimum: 1, maximum: max, default: Math.min(DEFAULT_PAGE, max) }),
  description: "page size",
  invalid: "invalid_limit",
});
const cursor: Param = {
  schema: T.String(),
  description: "`nextCursor` from the previous page, to read the next one (with the same filters)",
  invalid: "invalid_cursor",
};
const time = (description: string): Param => ({
  schema: T.String({ examples: ["2026-11-23T09:00:00Z", "1795424400000"] }),
  description: `${description}: an ISO 8601 time or epoch milliseconds`,
  invalid: "invalid_time",
});
const text = (description: string): Param => ({ schema: T.String(), description });
const eventId: Param = { schema: T.String(), description: "the event's gateway id (`evt_…`)", required: true };
const destinationName: Param = { schema: T.String(), description: "the destination's name in DESTINATIONS", required: true };
const quarantineId: Param = { schema: T.Integer({ minimum: 1 }), description: "the quarantined payload's id", required: true };

/** Answers to a request that selects more than it can read at once. */
const page = <S extends T.TSchema>(key: string, item: S) =>
  T.Object({ [key]: T.Array(item), nextCursor: Nullable(T.String(), { description: "null on the last page" }) }, { additionalProperties: false });

/** Where an event that must be stored and enqueued could not be: the request can be repeated. */
const STORAGE_CODES = ["storage_unavailable", "storage_timeout", "queue_unavailable"];

export const ADMIN_API: Record<string, Operation> = {
  "GET /admin/events": {
    operationId: "listEvents",
    role: "viewer",
    summary: "Events, newest first",
    query: {
      q: {
        schema: T.String({ maxLength: 256 }),
        description: "only events whose payload contains every word (payload search; needs SEARCH = \"on\")",
        invalid: "invalid_query",
      },
      provider: text("only this provider"),
      source: text("only events that arrived through this source"),
      type: text("only this type"),
      status: { schema: StringEnum(EVENT_STATUSES), description: "only events in this status" },
      tenant: text("only this tenant"),
      eventId: text("only this provider event id"),
      since: time("received at or after"),
      until: time("received before"),
      limit: limit(),
      cursor,
    },
    status: 200,
    response: page("events", EventView),
    errors: { 400: ["search_disabled"], 503: ["search_index_building"] },
  },
  "GET /admin/events/{id}": {
    operationId: "getEvent",
    role: "viewer",
    summary: "An event with its payload, its deliveries and every attempt",
    path: { id: eventId },
    status: 200,
    response: T.Object({ event: EventDetailView }, { additionalProperties: false }),
    errors: { 404: ["event_not_found"], 503: ["body_unavailable"] },
  },
  "POST /admin/events/{id}/replay": {
    operationId: "replayEvent",
    role: "operator",
    summary: "Deliver an event again",
    description: "To the destinations that route it now, or to the one named (pinned: sent even where routing no longer selects it).",
    path: { id: eventId },
    query: { destination: text("only this destination (it must be configured)") },
    status: 202,
    response: T.Object(
      {
        id: T.String(),
        replayed: T.Array(T.String(), { description: "the destinations it was queued for; empty when none routes it" }),
        roundInFlight: T.Boolean({
          description: "true: a delivery round held the event when the replay was made. The replay wins: that round's outcome is not recorded (its attempts are, as history), and the replay delivers again",
        }),
      },
      { additionalProperties: false },
    ),
    errors: { 404: ["event_not_found", "unknown_destination"], 503: ["body_unavailable", "invalid_destinations", "queue_unavailable"] },
  },
  "GET /admin/deliveries": {
    operationId: "listDeliveries",
    role: "viewer",
    summary: "Deliveries, newest first by last update",
    query: {
      status: { schema: StringEnum(DELIVERY_STATUSES), description: "only deliveries in this status", invalid: "invalid_status" },
      destination: text("only this destination"),
      since: time("updated at or after"),
      limit: limit(),
      cursor,
    },
    status: 200,
    response: page("deliveries", DeliveryView),
  },
  "POST /admin/replay": {
    operationId: "replayDeliveries",
    role: "operator",
    summary: "Deliver again, one page at a time, the finished deliveries a filter selects",
    description:
      "The set is fixed by the first call; repeat the call with the same parameters and `cursor` while `more` is true. Each delivery is pinned to its destination. Destinations no longer configured are left out.",
    query: {
      status: { schema: StringEnum(REPLAYABLE_STATUSES), description: "which finished deliveries (required: no filter never means everything)", required: true, invalid: "invalid_status" },
      destination: text("only this destination (it must be configured)"),
      since: time("updated at or after"),
      limit: limit(BULK_REPLAY_LIMIT),
      cursor,
    },
    status: 202,
    response: T.Object(
      {
        replayed: T.Integer({ minimum: 0, description: "deliveries reset and enqueued by this call" }),
        events: T.Integer({ minimum: 0, description: "events they belong to (one queue message each)" }),
        more: T.Boolean(),
        nextCursor: Nullable(T.String()),
      },
      { additionalProperties: false },
    ),
    errors: { 400: ["cursor_mismatch"], 404: ["unknown_destination"], 503: ["invalid_destinations", "queue_unavailable"] },
  },
  "GET /admin/quarantine": {
    operationId: "listQuarantine",
    role: "viewer",
    summary: "Quarantined payloads, newest first by last receipt",
    query: {
      provider: text("only this provider"),
      released: { schema: T.Boolean(), description: "true: only released ones; false: only those still held", invalid: "invalid_released" },
      limit: limit(),
      cursor,
    },
    status: 200,
    response: page("quarantined", QuarantinedView),
  },
  "GET /admin/quarantine/{id}": {
    operationId: "getQuarantined",
    role: "viewer",
    summary: "A quarantined payload with its body",
    path: { id: quarantineId },
    status: 200,
    response: T.Object({ quarantined: QuarantinedDetailView }, { additionalProperties: false }),
    errors: { 404: ["quarantine_not_found"], 503: ["body_unavailable"] },
  },
  "POST /admin/quarantine/{id}/release": {
    operationId: "releaseQuarantined",
    role: "operator",
    summary: "Validate a quarantined payload again and, if it passes, accept it as an event",
    description: "With `force=true` a payload that still fails is accepted as it is, marked `forced`. A second release answers `already_released` with the same event.",
    path: { id: quarantineId },
    query: { force: { schema: T.Boolean({ default: false }), description: "accept it even if it still fails validation", invalid: "invalid_force" } },
    status: 200,
    response: ReleaseView,
    errors: {
      404: ["quarantine_not_found"],
      422: ["schema_mismatch", "malformed_json", "invalid_utf8", "empty_body", "not_releasable"],
      503: [...STORAGE_CODES, "body_unavailable"],
    },
  },
  "GET /admin/stats": {
    operationId: "getStats",
    role: "viewer",
    summary: "Counts of events and deliveries in a time window (default: the last 24 hours)",
    query: { since: time("from (default: 24 hours before `until`)"), until: time("to (default: now)") },
    status: 200,
    response: StatsView,
  },
  "GET /admin/destinations": {
    operationId: "getDestinations",
    role: "viewer",
    summary: "DESTINATIONS as configured, each with its state (active, paused, open), held deliveries and last success and failure; or its errors",
    description: "Errors name the entry, the field and the rule, never the rejected value (it may be a secret pasted into the wrong field).",
    status: 200,
    response: T.Union([
      T.Object({ valid: T.Literal(true), destinations: T.Array(DestinationView) }, { additionalProperties: false }),
      T.Object({ valid: T.Literal(false), errors: T.Array(T.String(), { minItems: 1 }) }, { additionalProperties: false }),
    ]),
  },
  "POST /admin/destinations/{name}/pause": {
    operationId: "pauseDestination",
    role: "operator",
    summary: "Pause a destination: its deliveries are held (no attempts, no queue retries) until it is resumed",
    description: "Pausing again keeps the first pause's time. A replay to a paused destination is held too.",
    path: { name: destinationName },
    status: 200,
    response: DestinationControlView,
    errors: { 404: ["unknown_destination"], 503: ["invalid_destinations"] },
  },
  "POST /admin/destinations/{name}/resume": {
    operationId: "resumeDestination",
    role: "operator",
    summary: "Resume a destination and deliver what it held, oldest first",
    description:
      "The first chunk of held deliveries is enqueued by this call (`released`), the rest through the queue. While the circuit is open, held deliveries wait for its probe instead. Resuming an active destination does nothing.",
    path: { name: destinationName },
    status: 200,
    response: DestinationControlView,
    errors: { 404: ["unknown_destination"], 503: ["invalid_destinations"] },
  },
  "POST /admin/destinations/{name}/preview": {
    operationId: "previewTransform",
    role: "operator",
    summary: "Run the destination's transform on a stored event or a pasted payload, and answer what it would forward (or why not); nothing is forwarded",
    description:
      "The same isolate, limits and failure kinds as a forward. A pasted payload is validated by its provider's schema first (422 schema_mismatch with the path), which names its type, id, tenant and time.",
    path: { name: destinationName },
    requestBody: PreviewRequest,
    status: 200,
    response: PreviewView,
    errors: {
      400: ["invalid_preview", "no_transform", "unknown_provider", "malformed_json", "invalid_utf8", "empty_body"],
      404: ["unknown_destination", "event_not_found"],
      413: ["body_too_large"],
      422: ["schema_mismatch"],
      503: ["body_unavailable", "invalid_destinations"],
    },
  },
  "GET /admin/alerts": {
    operationId: "getAlerts",
    role: "viewer",
    summary: "Alerts: whether ALERT_URL is set and valid, and each kind and subject's pending count, schedule and history",
    status: 200,
    response: AlertsView,
  },
  "GET /admin/sources": {
    operationId: "getSources",
    role: "viewer",
    summary: "Every source served (built-in and from SOURCES), or SOURCES's errors",
    description:
      "Binding names and whether each is set, never a value. While SOURCES is invalid only the built-in sources are served, and other paths answer 503 invalid_sources; errors name the entry, the field and the rule, never the rejected value.",
    status: 200,
    response: T.Union([
      T.Object({ valid: T.Literal(true), sources: T.Array(SourceView) }, { additionalProperties: false }),
      T.Object(
        { valid: T.Literal(false), errors: T.Array(T.String(), { minItems: 1 }), sources: T.Array(SourceView, { description: "the built-in sources, served meanwhile" }) },
        { additionalProperties: false },
      ),
    ]),
  },
  "GET /admin/dead-letters": {
    operationId: "listDeadLetters",
    role: "viewer",
    summary: "Everything the dead-letter queue delivered, newest first",
    query: { limit: limit(), cursor },
    status: 200,
    response: page("deadLetters", DeadLetterView),
  },
  "GET /admin/metrics": {
    operationId: "getMetrics",
    role: "viewer",
    summary: "Counters and gauges in Prometheus text format",
    description: "Counters never go down (retention included): events, deliveries and attempts, and a forward-duration histogram per destination; gauges of pending, held, dead and quarantined.",
    status: 200,
    mediaType: "text/plain; version=0.0.4",
    response: T.String(),
  },
  "GET /admin/audit": {
    operationId: "listAudit",
    role: "viewer",
    summary: "The audit log: every operator action, refused ones included, newest first",
    description: "Who (actor, via, role, address), what (action, target, detail) and the result. Kept AUDIT_RETENTION_DAYS (default RETENTION_DAYS).",
    query: {
      actor: text("only this actor (exactly as recorded: an email, a client id, or admin-token)"),
      action: { schema: StringEnum(AUDIT_ACTIONS), description: "only this action", invalid: "invalid_action" },
      target: text("only this target (a destination, an event id, a quarantined payload's id)"),
      since: time("at or after"),
      until: time("before"),
      limit: limit(),
      cursor,
    },
    status: 200,
    response: page("records", AuditRecordView),
  },
  "GET /admin/openapi.json": {
    operationId: "getOpenApi",
    role: "viewer",
    summary: "This document",
    status: 200,
    response: T.Object({ openapi: T.String({ pattern: "^3\\.1\\.\\d+$" }), info: T.Object({ title: T.String(), version: T.String() }), paths: T.Record(T.String(), T.Unknown()) }),
  },
};

/** Schemas that appear in the document once, under components, and are referenced everywhere else. */
const COMPONENTS: Record<string, T.TSchema> = {
  Event: EventView,
  EventDetail: EventDetailView,
  Delivery: DeliveryView,
  Quarantined: QuarantinedView,
  QuarantinedDetail: QuarantinedDetailView,
  Release: ReleaseView,
  DeadLetter: DeadLetterView,
  DestinationConfig: DestinationConfigView,
  Destination: DestinationView,
  Source: SourceView,
  Stats: StatsView,
  Preview: PreviewView,
  AuditRecord: AuditRecordView,
};
const COMPONENT_NAMES = new Map(Object.entries(COMPONENTS).map(([name, schema]) => [schema as object, name]));

/** A plain JSON copy of a schema (TypeBox's symbol keys dropped), with each component replaced by a $ref to it. */
function toJson(node: unknown, root = node): unknown {
  if (Array.isArray(node)) return node.map((item) => toJson(item, root));
  if (node === null || typeof node !== "object") return node;
  const name = node !== root ? COMPONENT_NAMES.get(node) : undefined;
  if (name) return { $ref: `#/components/schemas/${name}` };
  return Object.fromEntries(Object.entries(node).map(([key, value]) => [key, toJson(value, root)]));
}

const json = (schema: unknown) => ({ "application/json": { schema: toJson(schema) } });

/** Why an Access JWT was refused (admin/access.ts). */
const ACCESS_REFUSALS = [
  "access_token_missing", "access_token_invalid", "access_token_expired", "access_token_wrong_audience", "access_token_wrong_issuer", "access_key_unknown", "access_token_no_identity",
];

/** The role the request's route needs, as documented; a path no operation describes is left to the router's 404. */
export function documentedRole(c: Context<AppEnv>): Role {
  // The last route matched is the handler's (the sign-in and this guard are "/admin/*" middleware).
  const template = routePath(c, -1).replace(/:(\w+)/g, "{$1}");
  return ADMIN_API[`${c.req.method} ${template}`]?.role ?? "viewer";
}

function errorResponse(codes: string[], headers?: Record<string, unknown>) {
  return {
    description: `error: ${codes.join(", ")}`,
    ...(headers && { headers }),
    content: json(
      T.Object(
        {
          error: T.Object(
            {
              code: StringEnum(codes),
              message: T.String({ description: "for people; may change" }),
              path: T.Optional(T.String({ description: "JSONPath of the failing field (schema_mismatch)" })),
              role: T.Optional(StringEnum(["viewer", "operator"], { description: "the role needed (forbidden)" })),
            },
            { additionalProperties: false },
          ),
        },
        { additionalProperties: false },
      ),
    ),
  };
}

const RETRY_AFTER = { "Retry-After": { description: "seconds to wait before trying again", required: true, schema: { type: "integer" } } };

function operationObject(op: Operation) {
  const parameters = [
    ...Object.entries(op.path ?? {}).map(([name, p]) => ({ name, in: "path", ...p, required: true })),
    ...Object.entries(op.query ?? {}).map(([name, p]) => ({ name, in: "query", ...p, required: p.required ?? false })),
  ].map(({ name, in: where, schema, description, required }) => ({ name, in: where, description, required, schema: toJson(schema) }));
  const invalid = Object.values(op.query ?? {}).flatMap((p) => (p.invalid ? [p.invalid] : []));
  const errors: Partial<Record<ErrorStatus | 401 | 403 | 429 | 500, string[]>> = {
    ...op.errors,
    400: [...new Set([...invalid, ...(op.errors?.[400] ?? [])])],
    401: ["unauthorized", ...ACCESS_REFUSALS],
    403: ["forbidden"],
    429: ["too_many_attempts"],
    500: ["internal_error"],
    // Every operator action is audited: refused when its record cannot be written (admin/audit.ts).
    503: [...(op.errors?.[503] ?? []), ...(op.role === "operator" ? ["audit_unavailable"] : []), "admin_not_configured", "admin_token_too_short", "access_misconfigured", "access_keys_unavailable"],
  };
  const headers = {
    401: { "WWW-Authenticate": { description: "Bearer (the admin token) or Cf-Access-Jwt-Assertion (Cloudflare Access)", required: true, schema: { type: "string" } } },
    429: RETRY_AFTER,
    503: RETRY_AFTER,
  };
  const needs = `Needs the ${op.role} role${op.role === "operator" ? "" : " (an operator has it too)"}.`;
  return {
    operationId: op.operationId,
    summary: op.summary,
    description: op.description ? `${op.description}\n\n${needs}` : needs,
    "x-required-role": op.role,
    ...(parameters.length && { parameters }),
    ...(op.requestBody && { requestBody: { required: true, content: json(op.requestBody) } }),
    responses: {
      [op.status]: { description: op.summary, content: op.mediaType ? { [op.mediaType]: { schema: toJson(op.response) } } : json(op.response) },
      ...Object.fromEntries(
        Object.entries(errors)
          .filter(([, codes]) => codes.length)
          .map(([status, codes]) => [status, errorResponse(codes, headers[Number(status) as keyof typeof headers])]),
      ),
    },
  };
}

export function openApiDocument() {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [route, op] of Object.entries(ADMIN_API)) {
    const [method, path] = route.split(" ") as [string, string];
    (paths[path] ??= {})[method.toLowerCase()] = operationObject(op);
  }
  return {
    openapi: "3.1.1",
    info: {
      title: "edgehook operator API",
      version: "1",
      description:
        "Events, deliveries, replays, quarantine, dead letters and stats. Every error body is `{\"error\":{\"code\",\"message\"[,\"path\"][,\"role\"]}}`. With Cloudflare Access configured, only an Access JWT signs in; otherwise the admin token. Each operation names the role it needs (`x-required-role`): viewers read, operators also change state; the admin token is an operator.",
    },
    security: [{ adminToken: [] }, { cloudflareAccess: [] }],
    paths,
    components: {
      securitySchemes: {
        adminToken: { type: "http", scheme: "bearer", description: "ADMIN_TOKEN, in the Authorization header only; refused while Cloudflare Access is configured" },
        cloudflareAccess: { type: "apiKey", in: "header", name: "Cf-Access-Jwt-Assertion", description: "the JWT Cloudflare Access adds to each request it lets through (ACCESS_TEAM_DOMAIN, ACCESS_AUD)" },
      },
      schemas: Object.fromEntries(Object.entries(COMPONENTS).map(([name, schema]) => [name, toJson(schema)])),
    },
  };
}
