/**
 * The Worker's bindings, in one place. Kept by hand rather than by `wrangler types`
 * because secrets are optional here (an unset secret is a state we answer, with 503)
 * and DESTINATIONS is untrusted configuration that we validate ourselves.
 */
export interface Env {
  DB: D1Database;
  /** Event bodies, byte for byte, keyed by event id (store/bodies.ts); D1 is their index. */
  BODIES: R2Bucket;
  EVENTS_QUEUE: Queue<EventsQueueMessage>;
  DEAD_LETTER_QUEUE: Queue<QueuedEvent>;

  MAX_BODY_BYTES?: string;
  STORAGE_BUDGET_MS?: string;
  BODY_TIMEOUT_MS?: string;
  RETENTION_DAYS?: string;
  /** Days the audit log is kept; unset: RETENTION_DAYS. */
  AUDIT_RETENTION_DAYS?: string;
  MAX_DELIVERY_ATTEMPTS?: string;
  RETRY_BASE_SECONDS?: string;
  RETRY_MAX_SECONDS?: string;
  /** Forwards one queue batch may start (the plan's subrequest limit); the rest wait for the next delivery. */
  MAX_FORWARDS_PER_BATCH?: string;
  /** An unfinished event no consumer has handled for this long is re-enqueued by the cron's sweep. */
  RECONCILE_AFTER_SECONDS?: string;
  /** The dead-letter queue's name (wrangler.toml); its batches go to the dead-letter consumer. */
  DEAD_LETTER_QUEUE_NAME?: string;
  /** "on": payload search (GET /admin/events?q=); the cron builds and keeps its index. Anything else: off, no index. */
  SEARCH?: string;
  /** Array of destination tables from wrangler.toml; validated by deliver/destinations.ts. */
  DESTINATIONS?: unknown;
  /** Array of source tables from wrangler.toml (more paths, each with its own secrets); validated by sources.ts. */
  SOURCES?: unknown;

  SEISMIC_SIGNING_SECRET?: string;
  SEISMIC_SIGNING_SECRET_OLD?: string;
  ZUDDL_SIGNING_SECRET?: string;
  ZUDDL_SIGNING_SECRET_OLD?: string;
  ZUDDL_AUTH_TOKEN?: string;
  /** At least 32 characters (admin/auth.ts); a shorter one closes the admin API and the console. */
  ADMIN_TOKEN?: string;
  /**
   * Cloudflare Access (admin/access.ts): the team's origin (https://<team>.cloudflareaccess.com,
   * or a loopback http origin to try it locally) and the application's AUD tag. Both set: the
   * admin API and the console take only Access JWTs; neither: the admin token.
   */
  ACCESS_TEAM_DOMAIN?: string;
  ACCESS_AUD?: string;
  /** Who holds which role (admin/roles.ts): comma-separated addresses, service tokens' client ids or *@domain. */
  OPERATORS?: string;
  VIEWERS?: string;
  /** One Durable Object per destination with `rate_per_second`: the schedule its forwards share (deliver/rate-limiter.ts). */
  RATE_LIMITER?: DurableObjectNamespace<RateLimiterApi & Rpc.DurableObjectBranded>;
  /** One Durable Object per destination in a lane of its own: forwards its deliveries at its pace (deliver/lane.ts). */
  LANES?: DurableObjectNamespace<LaneApi & Rpc.DurableObjectBranded>;
  /** A forward running this long (ms) moves its destination to its lane. */
  LANE_BUDGET_MS?: string;
  /** Alerts (see alerts/): where to POST them (a secret; unset: no alerts), how, how often. */
  ALERT_URL?: string;
  ALERT_FORMAT?: string;
  ALERT_SECRET?: string;
  ALERT_COOLDOWN_SECONDS?: string;
  ALERT_GROUP_WAIT_SECONDS?: string;
  /** The console's public base URL (https://…/console), for links in alerts. */
  CONSOLE_URL?: string;
  ALERTS_QUEUE?: Queue<AlertMessage>;
  /** The alerts queue's name, so its batches go to the alerts consumer (default edgehook-alerts; rename both together). */
  ALERTS_QUEUE_NAME?: string;
  /** Rate limiting binding counting wrong admin tokens per client (throttle.ts); without it, each isolate counts. */
  AUTH_FAILURES?: RateLimit;
  /** The Worker Loader that runs destinations' transforms in isolates of their own (deliver/transform.ts). */
  LOADER?: WorkerLoader;
  /** A transform's CPU per run (the loader's limits.cpuMs) and wall-clock time, in ms. */
  TRANSFORM_CPU_MS?: string;
  TRANSFORM_TIMEOUT_MS?: string;
  /** Optional Workers Analytics Engine dataset: one data point per webhook request and per forward attempt. */
  METRICS?: AnalyticsEngineDataset;
  /** Destination and source secrets are bound under names chosen in DESTINATIONS and SOURCES. */
  [secretBinding: string]: unknown;
}

/** Which of a source's secrets verified a request: the current one, or the old one kept during a rotation. */
export type SecretSlot = "current" | "old";
export interface ConfiguredSecret {
  slot: SecretSlot;
  value: string;
}

/** An accepted event as the request path read it: everything the consumer needs to store it. */
export interface Arrival {
  provider: string;
  /** The source (path) it arrived through; the provider's name for its built-in source. */
  source: string;
  /** The provider's id for the event, covered by its signature. */
  eventId: string;
  type: string;
  knownType: boolean;
  tenant: string | null;
  occurredAt: string | null;
  receivedAt: number;
  verifiedWith: SecretSlot;
  contentType: string;
  /** The raw body, forwarded byte for byte. */
  body: string;
  /** Released from quarantine as it was, past a failing validation (see store/quarantine.ts). */
  forced: boolean;
  /** Released from quarantine by an operator: not a webhook request, so not counted again (store/events.ts). */
  released?: boolean;
}

/**
 * What the queues carry. The request path sends the event itself (`event`, body included): the
 * consumer stores it (see deliver/consumer.ts). Everything else refers to an event already in
 * D1 by its key alone: a body too large for a queue message, the sweep, a replay. Routing,
 * replays and pins live in D1, so any copy of a message, or one the sweep sends, does the same work.
 */
export interface QueuedEvent {
  eventKey: string;
  /** Present on the request path's message until the event is stored. */
  event?: Arrival;
  /** Dead-letter notices only: the destinations whose delivery went dead. */
  destinations?: string[];
  /** A circuit probe: deliver this event to this destination although its circuit is open, if `probeId` is its current probe. */
  probe?: string;
  probeId?: string;
}

/** Releases the next held deliveries of a destination (resume, or a circuit closing), a chunk at a time. */
export interface ReleaseHeld {
  release: string;
}

/** What the alerts queue carries: which alert key (kind and subject) to send (alerts/), and the due time it was scheduled for. */
export interface AlertMessage {
  alert: { kind: string; subject: string };
  /** Absent on messages sent before it was carried: the consumer takes those for copies when they come early. */
  due?: number | null;
}

/** Everything the events queue carries. */
export type EventsQueueMessage = QueuedEvent | ReleaseHeld;

/** One event's slot on a rate-limited destination's schedule: start now at `at` (go), come back at `at`, or (null) no room within the booking horizon. */
export type Reservation = { at: number; go: boolean } | { at: null };

/** What the rate limiter's Durable Object answers (deliver/rate-limiter.ts). */
export interface RateLimiterApi {
  reserve(keys: string[], perSecond: number, horizonMs: number, bookAheadMs: number): Reservation[];
}

/** The vars a lane delivers under, passed by the consumer that wakes it (deliver/lane.ts). */
export type LaneVars = Partial<Pick<Env, "MAX_DELIVERY_ATTEMPTS" | "RETRY_BASE_SECONDS" | "RETRY_MAX_SECONDS" | "TRANSFORM_CPU_MS" | "TRANSFORM_TIMEOUT_MS" | "LANE_BUDGET_MS" | "MAX_FORWARDS_PER_BATCH">> & { DESTINATIONS?: unknown };

/** An open circuit's current probe, handed to the destination's lane (the probe message's event, and its id). */
export interface LaneProbe {
  eventKey: string;
  probeId: string;
}

/** What a destination's lane answers (deliver/lane.ts). */
export interface LaneApi {
  poke(destination: string, vars: LaneVars, probe?: LaneProbe): Promise<void>;
}

/** Fields of the one structured log line written per request. Never a secret or a body. */
export interface LogFields {
  method: string;
  path: string;
  provider?: string;
  source?: string;
  eventKey?: string;
  eventId?: string;
  type?: string;
  outcome?: string;
  status?: number;
  durationMs?: number;
  warning?: string;
  error?: string;
}

/** viewer: reads everything the admin API and the console show; operator: also changes state (admin/roles.ts). */
export type Role = "viewer" | "operator";

/** Who is calling the admin API or using the console, once signed in (admin/auth.ts). */
export interface Identity {
  /** The Access JWT's email or service token's common_name, or "admin-token". */
  name: string;
  role: Role;
  via: "access" | "admin-token";
}

/** What an audited action's handler adds to its record (admin/audit.ts): a count, the event a release became, a result answered without throwing. */
export interface AuditNote {
  detail: Record<string, unknown>;
  result?: string;
}

/**
 * Hono's environment for every router and middleware: the bindings, the request's log line and,
 * behind the admin API's and the console's sign-in, who is calling (absent on webhook requests).
 */
export interface AppEnv {
  Bindings: Env;
  Variables: { log: LogFields; identity?: Identity; audit?: AuditNote };
}

/** Payload search is opt-in: indexing adds 25-50% to the cost of storing an event (bench/search.mjs). */
export const searchEnabled = (env: Env) => env.SEARCH === "on";

/** Reads a numeric var, falling back when it is unset or not a positive number. */
export function numberVar(value: string | undefined, fallback: number): number {
  const parsed = Number(value);
  return Number.isFinite(parsed) && parsed > 0 ? parsed : fallback;
}
