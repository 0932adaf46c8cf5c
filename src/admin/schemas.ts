/**
 * What the operator API answers, as JSON Schema built with TypeBox. Each schema's static type is
 * the return type of the view that builds that answer (operations.ts, quarantine.ts), so a view
 * that drifts from its schema fails to compile, and /admin/openapi.json (openapi.ts) is generated
 * from these same objects instead of a hand-kept copy. Limits and enums the handlers enforce are
 * defined here once and used by both.
 */
import * as T from "@sinclair/typebox";
import { TRANSFORM_FAILURES } from "../deliver/transform";
import { AUDIT_ACTIONS } from "../store/audit";
import { DELIVERY_STATUSES } from "../store/deliveries";
import type { EventStatus } from "../store/events";

/** Page size when `limit` is not given, and the largest one any list accepts. */
export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 200;
/** Deliveries one bulk replay page resets and re-enqueues at most; call again with `nextCursor` while `more` is true. */
export const BULK_REPLAY_LIMIT = 100;
/** What a bulk replay may select (pending deliveries are already on their way). */
export const REPLAYABLE_STATUSES = ["dead", "failed", "gone", "delivered", "cancelled", "transform_failed"] as const;
export const EVENT_STATUSES = ["received", "queued", "delivered", "failed", "dead", "held"] as const satisfies readonly EventStatus[];
export const RELEASE_STATUSES = ["accepted", "duplicate", "already_released"] as const;

/** A string from a fixed list, as `enum` (what OpenAPI tools read) rather than TypeBox's anyOf of consts. */
export const StringEnum = <V extends readonly string[]>(values: V, options: T.SchemaOptions = {}) =>
  T.Unsafe<V[number]>({ ...options, type: "string", enum: [...values] });

export const Nullable = <S extends T.TSchema>(schema: S, options: T.SchemaOptions = {}) => T.Union([schema, T.Null()], options);

const Time = (description?: string) => T.String({ format: "date-time", ...(description && { description }) });

/** Every answer lists exactly its fields: the tests then catch a field a view adds without describing it. */
const Strict = <P extends T.TProperties>(properties: P, description?: string) =>
  T.Object(properties, { additionalProperties: false, ...(description && { description }) });

const SecretSlot = StringEnum(["current", "old"], { description: "which signing secret verified the body: the current one or the previous one (during a rotation)" });

const payloadFields = {
  payloadFormat: StringEnum(["json", "text", "base64"], {
    description: "json: `payload` is the parsed body; text: the body as a string (a forced release that is not JSON); base64: the bytes (a quarantined body that is not UTF-8)",
  }),
  payload: T.Unknown({ description: "the body, in the form `payloadFormat` names" }),
};

export const EventView = Strict(
  {
    id: T.String({ description: "the gateway's id, `evt_` + 24 hex digits; the forwards' `webhook-id`" }),
    provider: T.String(),
    source: T.String({ description: "the source (path /webhooks/<source>) it arrived through; the first one when copies arrived through several" }),
    eventId: T.String({ description: "the provider's own id for the event, covered by its signature" }),
    type: T.String(),
    knownType: T.Boolean({ description: "false: a valid envelope of a type this gateway has no name for" }),
    tenant: Nullable(T.String()),
    occurredAt: Nullable(T.String(), { description: "exactly as the provider sent it (not always ISO 8601)" }),
    receivedAt: Time(),
    verifiedWith: SecretSlot,
    status: StringEnum(EVENT_STATUSES),
    enqueuedAt: Nullable(Time()),
    forced: T.Boolean({ description: "true only for an event released from quarantine past a failing validation" }),
    lastError: Nullable(T.String(), { description: "why the last delivery round could not run (an error, or DESTINATIONS invalid); null once one ran" }),
    lastHandledAt: Nullable(Time("the last time a consumer handled the event")),
  },
  "An accepted event, without its body",
);

export const AttemptView = Strict({
  attempt: T.Integer({ minimum: 1 }),
  at: Time(),
  durationMs: T.Integer({ minimum: 0 }),
  statusCode: Nullable(T.Integer(), { description: "the destination's HTTP status; null after a network error or timeout" }),
  error: Nullable(T.String()),
  transformCode: Nullable(T.String({ pattern: "^[0-9a-f]{16}$" }), {
    description: "which transform code made the forwarded body (the first 16 hex digits of the SHA-256 of its source); null: the event's own body",
  }),
});

const deliveryFields = {
  eventId: T.String({ description: "the event's gateway id (`evt_…`)" }),
  destination: T.String(),
  status: StringEnum(DELIVERY_STATUSES, {
    description: "pending/failed: work left; delivered, gone (410) and dead: finished until replayed; cancelled: no longer routed; skipped: its filter ran out of budget",
  }),
  attempts: T.Integer({ minimum: 0, description: "attempts since the last replay" }),
  lastStatusCode: Nullable(T.Integer()),
  lastError: Nullable(T.String()),
  lastAttemptAt: Nullable(Time()),
  nextAttemptAt: Nullable(Time()),
  deliveredAt: Nullable(Time()),
  deadLetteredAt: Nullable(Time()),
  pinned: T.Boolean({ description: "an operator replayed it by name: sent even where routing no longer selects it" }),
};

export const DeliveryView = Strict(deliveryFields, "The state of one event's delivery to one destination");

export const EventDetailView = Strict(
  {
    ...EventView.properties,
    contentType: T.String(),
    ...payloadFields,
    deliveries: T.Array(Strict({ ...deliveryFields, history: T.Array(AttemptView, { description: "every attempt, oldest first" }) })),
  },
  "An event with its payload and its deliveries",
);

const quarantinedFields = {
  id: T.Integer({ minimum: 1 }),
  provider: T.String(),
  source: T.String({ description: "the source it arrived through; the first one when the same bytes arrived through several" }),
  reason: T.String({ description: "the error code the request was answered with: malformed_json, invalid_utf8, empty_body or schema_mismatch" }),
  error: T.String(),
  path: Nullable(T.String(), { description: "JSONPath of the first schema failure" }),
  bytes: T.Integer({ minimum: 0 }),
  attempts: T.Integer({ minimum: 1, description: "how many times the provider sent these bytes" }),
  firstReceivedAt: Time(),
  lastReceivedAt: Time(),
  released: Nullable(Strict({ at: Time(), event: T.String({ description: "the event it became" }), forced: T.Boolean() })),
};

export const QuarantinedView = Strict(quarantinedFields, "A signed payload that could not be accepted, without its body");

export const QuarantinedDetailView = Strict(
  { ...quarantinedFields, contentType: T.String(), verifiedWith: SecretSlot, sha256: T.String({ pattern: "^[0-9a-f]{64}$" }), ...payloadFields },
  "A quarantined payload with its body",
);

export const ReleaseView = Strict({
  id: T.String({ description: "the event's gateway id, as the webhook answer and /admin/events name it" }),
  quarantineId: T.Integer({ minimum: 1 }),
  forced: T.Boolean(),
  releasedAt: Time(),
  status: StringEnum(RELEASE_STATUSES, {
    description: "accepted: stored and enqueued now; duplicate: that event was already accepted; already_released: an earlier release did it",
  }),
});

export const DeadLetterView = Strict({
  messageId: T.String({ description: "the dead-letter queue's message id" }),
  eventId: T.String(),
  destinations: Nullable(T.Array(T.String()), { description: "the destinations whose delivery died; null: the event's message used up the queue's retries" }),
  attempts: T.Integer({ minimum: 1 }),
  receivedAt: Time(),
});

/** One record of the audit log (admin/audit.ts): who did what, from where, with what result. */
export const AuditRecordView = Strict({
  id: T.Integer({ minimum: 1 }),
  at: Time("when the action was asked for"),
  actor: T.String({ description: "the Access identity (email, or a service token's client id), or admin-token" }),
  via: StringEnum(["access", "token", "session"], { description: "how the actor signed in: Cloudflare Access, the admin API's bearer token, or the console's token session" }),
  role: StringEnum(["viewer", "operator"]),
  address: Nullable(T.String(), { description: "CF-Connecting-IP" }),
  action: StringEnum(AUDIT_ACTIONS),
  target: Nullable(T.String(), { description: "the destination, the event or the quarantined payload; a bulk replay's destination filter (null: every destination)" }),
  detail: Nullable(T.Record(T.String(), T.Unknown()), { description: "the action's parameters and counts (a bulk replay's filter and count, force…); never a payload or a secret" }),
  result: T.String({ description: "ok, the refusal's or the error's code (forbidden, unknown_destination…), or pending: begun and its end not written" }),
  status: Nullable(T.Integer(), { description: "the HTTP status answered; null while pending" }),
});

/** A destination as declared in DESTINATIONS (the rules are in deliver/destinations.ts and the README). */
export const DestinationConfigView = Strict({
  name: T.String(),
  url: T.String({ format: "uri" }),
  providers: T.Optional(T.Array(T.String())),
  sources: T.Optional(T.Array(T.String(), { description: "only events that arrived through these sources" })),
  types: T.Optional(T.Array(T.String(), { description: "exact types, or prefixes ending in *" })),
  filter: T.Optional(T.String({ description: "JSONPath filter in Seismic's dialect" })),
  secret: T.Optional(T.String({ description: "the name of the secret binding holding the signing key, never its value" })),
  timeout_ms: T.Optional(T.Integer()),
  circuit_failures: T.Optional(T.Integer({ description: "consecutive failed attempts that open the circuit (default 10)" })),
  circuit_probe_seconds: T.Optional(T.Integer({ description: "time between probes while the circuit is open (default 60)" })),
  rate_per_second: T.Optional(T.Number({ description: "forwards per second at most, across every consumer" })),
  headers: T.Optional(
    T.Array(Strict({ name: T.String(), bindings: T.Array(T.String(), { description: "the secret bindings its value names (`${NAME}`)" }) }), {
      description: "outbound headers: names and the secret bindings they use, never their values",
    }),
  ),
  transform: T.Optional(T.String({ description: "the transform (transforms/<name>.js) that reshapes or drops each forward's body" })),
});

export const DESTINATION_STATES = ["active", "paused", "open"] as const;

/** A destination as configured, with its run-time state. */
export const DestinationView = Strict({
  name: T.String(),
  config: DestinationConfigView,
  state: StringEnum(DESTINATION_STATES, { description: "active; paused (by an operator, or after circuit_failures answers of 410 in a row); open: the circuit breaker holds deliveries and probes" }),
  held: T.Integer({ minimum: 0, description: "deliveries held while paused or open; resuming (or the circuit closing) delivers them, oldest first" }),
  pausedAt: Nullable(Time()),
  pausedReason: Nullable(T.String()),
  consecutiveFailures: T.Integer({ minimum: 0 }),
  circuitOpenedAt: Nullable(Time()),
  nextProbeAt: Nullable(Time("when the open circuit's next probe is due")),
  lastSuccessAt: Nullable(Time()),
  lastFailureAt: Nullable(Time()),
  lane: StringEnum(["consumer", "own"], {
    description: "consumer: queue batches forward it with the other destinations; own: a forward ran past LANE_BUDGET_MS, so its lane (one Durable Object) forwards it at its own pace and no batch waits on it",
  }),
  laneSince: Nullable(Time("when it moved to its own lane")),
  laneReason: Nullable(T.String({ description: "why it moved to its own lane" })),
});

/** Alerts: whether and how they are sent, and each kind and subject's state. */
export const AlertsView = Strict({
  configured: T.Boolean({ description: "ALERT_URL is set (its value is never shown)" }),
  valid: T.Boolean(),
  errors: T.Array(T.String(), { description: "ALERT_* settings that are wrong: the setting and the rule, never its value" }),
  format: Nullable(StringEnum(["slack", "json"]), { description: "null while ALERT_FORMAT is neither (see errors)" }),
  signed: T.Boolean({ description: "ALERT_SECRET is set: alerts carry Standard Webhooks headers" }),
  cooldownSeconds: T.Number({ exclusiveMinimum: 0 }),
  groupWaitSeconds: T.Number({ exclusiveMinimum: 0 }),
  alerts: T.Array(
    Strict({
      kind: T.String(),
      subject: T.String({ description: "what it is about: a destination, a source, DESTINATIONS, the sweep, the dead-letter queue" }),
      pending: T.Integer({ description: "occurrences not sent yet (the next alert's count)" }),
      firstAt: Nullable(Time()),
      lastAt: Nullable(Time()),
      dueAt: Nullable(Time("when the next alert for it is due")),
      lastSentAt: Nullable(Time()),
      sent: T.Integer({ minimum: 0 }),
      failed: T.Integer({ minimum: 0, description: "attempts the target refused or did not answer (each retried)" }),
    }),
  ),
});

/** The answer to a pause or a resume. */
export const DestinationControlView = Strict({
  destination: DestinationView,
  released: T.Integer({ minimum: 0, description: "held deliveries made pending and enqueued by this call (a resume); the rest follow through the queue, oldest first" }),
});

/** What to preview a destination's transform on: a stored event, or a payload pasted as its provider would send it. */
export const PreviewRequest = T.Union([
  Strict({ eventId: T.String({ description: "a stored event's gateway id (`evt_…`)" }) }),
  Strict({
    provider: T.String({ description: "the provider whose payload this is (`seismic`, `zuddl`): its schema validates it and names its type, id, tenant and time" }),
    payload: T.Unknown({ description: "the payload, as the provider sends it" }),
    source: T.Optional(T.String({ description: "the source it would arrive through (default: the provider's built-in one)" })),
  }),
]);

/** What a destination's transform made of an event; nothing was forwarded. */
export const PreviewView = Strict({
  destination: T.String(),
  transform: T.String({ description: "transforms/<transform>.js" }),
  eventId: Nullable(T.String({ description: "the stored event previewed; null for a pasted payload" })),
  outcome: StringEnum(["body", "skipped", "failed"] as const, { description: "body: what would be forwarded; skipped: the transform returned null; failed: see error" }),
  body: T.Optional(T.Unknown({ description: "the body that would be forwarded (JSON), when outcome is body" })),
  error: T.Optional(Strict({ kind: StringEnum(TRANSFORM_FAILURES), message: T.String({ description: "what failed and where in the transform; never payload data" }) })),
  durationMs: T.Number({ minimum: 0 }),
});

const BindingState = Strict(
  { name: T.String({ description: "the secret binding's name, never its value" }), set: T.Boolean({ description: "whether the binding has a value" }) },
);

/** A source as served, its binding names and whether each is set (see src/sources.ts and the README). */
export const SourceView = Strict({
  name: T.String({ description: "its path: POST /webhooks/<name>" }),
  provider: T.String(),
  builtIn: T.Boolean({ description: "a provider's own source, with fixed binding names; served even while SOURCES is invalid" }),
  configured: T.Boolean({ description: "false: its signing secret (or the token it names) is not set; it answers 503 provider_not_configured" }),
  bindings: Strict({ secret: BindingState, secretOld: Nullable(BindingState), token: Nullable(BindingState) }),
});

export const StatsView = Strict({
  since: Time(),
  until: Time(),
  events: T.Array(Strict({ provider: T.String(), type: T.String(), status: StringEnum(EVENT_STATUSES), count: T.Integer({ minimum: 1 }) }), {
    description: "events received in the window, by provider, type and status",
  }),
  deliveries: T.Array(Strict({ destination: T.String(), status: StringEnum(DELIVERY_STATUSES), count: T.Integer({ minimum: 1 }) }), {
    description: "deliveries last updated in the window, by destination and status",
  }),
});

export type EventView = T.Static<typeof EventView>;
export type DestinationView = T.Static<typeof DestinationView>;
export type DestinationConfigView = T.Static<typeof DestinationConfigView>;
export type DestinationControlView = T.Static<typeof DestinationControlView>;
export type AlertsView = T.Static<typeof AlertsView>;
export type SourceView = T.Static<typeof SourceView>;
export type EventDetailView = T.Static<typeof EventDetailView>;
export type DeliveryView = T.Static<typeof DeliveryView>;
export type AuditRecordView = T.Static<typeof AuditRecordView>;
export type AttemptView = T.Static<typeof AttemptView>;
export type QuarantinedView = T.Static<typeof QuarantinedView>;
export type QuarantinedDetailView = T.Static<typeof QuarantinedDetailView>;
export type ReleaseView = T.Static<typeof ReleaseView>;
export type PreviewRequest = T.Static<typeof PreviewRequest>;
export type PreviewView = T.Static<typeof PreviewView>;
export type PayloadView = T.Static<T.TObject<typeof payloadFields>>;
