/**
 * Destinations: where accepted events are forwarded, declared in wrangler.toml as the
 * DESTINATIONS var and validated here. A configuration with any error is reported (counted in
 * /healthz, listed in /admin/destinations and the logs) and delivers nothing: events wait in the
 * retry path until it is fixed. Errors name the field and the rule, never the rejected value,
 * which may be a secret pasted into the wrong field (#9.6).
 */
import { array, integer, max, min, nonempty, number, object, optional, pattern, record, refine, size, string, type Infer } from "superstruct";
import { describeFailure, entryLabel, fromJsonText } from "../config";
import { MAX_QUEUE_DELAY_SECONDS } from "../queues";
import type { Env } from "../env";
import { configuredSourceNames, SOURCE_NAME, sourceSecretBindings } from "../sources";
import { compileFilter, JsonPathError, type CompiledFilter } from "./jsonpath";
import { TRANSFORM_NAME, transformSource } from "./transform-source";

const DEFAULT_TIMEOUT_MS = 10_000;
/** Consecutive failed attempts that open a destination's circuit, unless it sets its own. */
export const DEFAULT_CIRCUIT_FAILURES = 10;
/** How often an open circuit tries one probe delivery, unless the destination sets its own. */
export const DEFAULT_CIRCUIT_PROBE_SECONDS = 60;

/** Outbound headers a destination may set. */
const MAX_HEADERS = 20;
/** A header value's `${NAME}` placeholders: each stands for the secret binding NAME, read at send time. */
const PLACEHOLDER = /\$\{([^}]*)\}/g;
const BINDING_NAME = /^[A-Z][A-Z0-9_]*$/;
/** A header name (an HTTP token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/;
/** Secrets edgehook keeps to itself, which a header may not send anywhere (sources' and destinations' are added per configuration). */
const OWN_SECRETS = ["ADMIN_TOKEN", "ALERT_URL", "ALERT_SECRET"];
/** Headers edgehook sets itself, or the runtime does: a destination may not set them. */
const RESERVED_HEADER = /^(webhook-.*|x-edgehook-.*|content-type|host|content-length)$/i;
const FIXED_RESERVED = new Set(["content-type", "host", "content-length"]);

export function isAllowedUrl(value: string): boolean {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  if (url.protocol === "https:") return true;
  // Plain http only to this machine, for local development and tests.
  return url.protocol === "http:" && ["127.0.0.1", "localhost", "[::1]"].includes(url.hostname);
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

const DestinationConfig = object({
  name: pattern(string(), NAME),
  url: refine(string(), "url", isAllowedUrl),
  providers: optional(size(array(nonempty(string())), 1, 20)),
  sources: optional(size(array(pattern(string(), SOURCE_NAME)), 1, 50)),
  types: optional(size(array(pattern(string(), /^[^*]+\*?$|^\*$/)), 1, 100)),
  filter: optional(nonempty(string())),
  secret: optional(pattern(string(), /^[A-Z][A-Z0-9_]*$/)),
  timeout_ms: optional(max(min(integer(), 100), 30_000)),
  circuit_failures: optional(max(min(integer(), 1), 1_000)),
  // A probe is a delayed queue message.
  circuit_probe_seconds: optional(max(min(integer(), 1), MAX_QUEUE_DELAY_SECONDS)),
  rate_per_second: optional(max(min(number(), 0.01), 1_000)),
  headers: optional(refine(record(string(), string()), "headers", (headers) => Object.keys(headers).length <= MAX_HEADERS)),
  transform: optional(pattern(string(), TRANSFORM_NAME)),
});
export type DestinationConfig = Infer<typeof DestinationConfig>;

/**
 * Each field's rule as error messages state it, in place of superstruct's messages, which quote
 * the rejected value. `satisfies` keeps it in step with the struct above.
 */
const RULES = {
  name: "must be 1-64 letters, digits or ._- starting with a letter or digit",
  url: "must be https (or http to 127.0.0.1/localhost)",
  providers: "must be a list of 1-20 non-empty provider names",
  sources: "must be a list of 1-50 source names (a-z, 0-9, -)",
  types: "must be a list of 1-100 exact types or prefixes ending in *",
  filter: "must be a non-empty JSONPath filter",
  secret: "must be the name of a secret binding (A-Z, 0-9, _), not the secret itself",
  timeout_ms: "must be an integer from 100 to 30000",
  circuit_failures: "must be an integer from 1 to 1000",
  circuit_probe_seconds: "must be an integer from 1 to 43200",
  rate_per_second: "must be a number from 0.01 to 1000",
  headers: `must be a table of at most ${MAX_HEADERS} header names to text values, in which \${NAME} stands for the secret binding NAME`,
  transform: "must name a file in transforms/ without .js: 1-64 lowercase letters, digits, - or _",
} satisfies Record<keyof DestinationConfig, string>;

export interface Destination {
  name: string;
  url: string;
  providers: ReadonlySet<string> | null;
  /** Only events that arrived through these sources (see src/sources.ts); null: any source. */
  sources: ReadonlySet<string> | null;
  types: { exact: ReadonlySet<string>; prefixes: readonly string[] } | null;
  filter: CompiledFilter | null;
  /** Key bytes of the Standard Webhooks secret, or null to forward unsigned. */
  signingKey: Uint8Array | null;
  timeoutMs: number;
  /** Consecutive failed attempts that open the circuit. */
  circuitFailures: number;
  /** Time between probes while the circuit is open. */
  probeSeconds: number;
  /** Forwards per second at most, across every consumer invocation; null: unlimited. */
  ratePerSecond: number | null;
  /** Outbound headers with their secrets filled in. Held in memory only: never shown, logged or stored. */
  headers: [name: string, value: string][];
  /** The transform (transforms/<name>.js) that reshapes or drops each forward's body; null: the original body. */
  transform: string | null;
  /** The declaration as written, for the operator API (never the secret's value). */
  config: DestinationConfig;
}

export type DestinationsResult = { ok: true; destinations: Destination[] } | { ok: false; errors: string[] };

/** Parses `whsec_<base64>` into key bytes; null when the value is not in that format. */
export function standardWebhooksKey(secret: string): Uint8Array | null {
  const match = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(secret);
  if (!match) return null;
  try {
    const bytes = Uint8Array.from(atob(match[1]!), (c) => c.charCodeAt(0));
    return bytes.length >= 16 ? bytes : null;
  } catch {
    return null;
  }
}

let cache: { key: string; result: DestinationsResult } | null = null;

/** Validates DESTINATIONS (and the secrets it names) once per isolate and configuration. */
export function loadDestinations(env: Env): DestinationsResult {
  const raw = fromJsonText(env.DESTINATIONS ?? []);
  const secretNames = Array.isArray(raw) ? raw.flatMap((d: { secret?: unknown; headers?: unknown }) => [
    typeof d?.secret === "string" ? d.secret : "",
    ...(typeof d?.headers === "object" && d.headers !== null ? Object.values(d.headers).flatMap(placeholders) : []),
  ]) : [];
  // The key holds secret values only in this isolate's memory, to notice a `wrangler secret put`.
  // The source names a destination may route on come from SOURCES: a change there is a new configuration too.
  const sourceNames = configuredSourceNames(env);
  // What headers may not send: edgehook's own secrets, every source's, and every destination's signing secret.
  const ownSecrets = new Set([...OWN_SECRETS, ...sourceSecretBindings(env), ...(Array.isArray(raw) ? raw.map((d: { secret?: unknown }) => d?.secret).filter((name) => typeof name === "string") : [])]);
  const key = JSON.stringify([raw, secretNames.map((name) => (name ? String(env[name] ?? "") : "")), sourceNames && [...sourceNames], [...ownSecrets]]);
  if (cache?.key !== key) cache = { key, result: parseDestinations(raw, env, sourceNames, ownSecrets) };
  return cache.result;
}

function parseDestinations(raw: unknown, env: Env, sourceNames: ReadonlySet<string> | null, ownSecrets: ReadonlySet<string>): DestinationsResult {
  if (!Array.isArray(raw)) return { ok: false, errors: ["DESTINATIONS must be an array of tables (or JSON text of one)"] };
  const errors: string[] = [];
  const destinations: Destination[] = [];
  const names = new Set<string>();
  raw.forEach((entry: unknown, index) => {
    const [error, config] = DestinationConfig.validate(entry);
    const label = entryLabel("DESTINATIONS", entry, index, NAME);
    if (error) {
      for (const failure of error.failures()) errors.push(`${label}${describeFailure(failure, RULES, "must be a table with at least name and url")}`);
      return;
    }
    if (names.has(config.name)) errors.push(`${label}: name "${config.name}" is used twice`);
    names.add(config.name);

    let filter: CompiledFilter | null = null;
    if (config.filter) {
      try {
        filter = compileFilter(config.filter);
      } catch (err) {
        if (!(err instanceof JsonPathError)) throw err;
        errors.push(`${label}.filter: ${err.message}`);
      }
    }
    let signingKey: Uint8Array | null = null;
    if (config.secret) {
      const value = env[config.secret];
      signingKey = typeof value === "string" ? standardWebhooksKey(value) : null;
      // The binding's name is not repeated: a secret pasted here that happens to look like a name must not be echoed.
      if (!signingKey) errors.push(`${label}.secret: the binding it names is missing or not whsec_<base64> (16+ bytes)`);
    }
    const headers = config.headers ? resolveHeaders(config.headers, env, ownSecrets, `${label}.headers`, errors) : [];
    // Without the binding a limit could not be kept across invocations: refuse rather than send unmetered.
    if (config.rate_per_second !== undefined && !env.RATE_LIMITER) errors.push(`${label}.rate_per_second: needs the RATE_LIMITER Durable Object binding (wrangler.toml)`);
    // Transforms run only through the Worker Loader, never in the gateway (deliver/transform.ts).
    if (config.transform !== undefined && !env.LOADER) errors.push(`${label}.transform: needs the LOADER Worker Loader binding (wrangler.toml [[worker_loaders]]; a plan with Dynamic Workers)`);
    if (config.transform !== undefined && transformSource(config.transform) === null) {
      errors.push(`${label}.transform: names no file in transforms/ (each transform is transforms/<name>.js, deployed with the Worker)`);
    }
    // Unknown while SOURCES is invalid (null): not checked then, so built-in sources keep their deliveries.
    config.sources?.forEach((name, i) => {
      if (sourceNames && !sourceNames.has(name)) errors.push(`${label}.sources.${i}: is not a configured source`);
    });
    const types = config.types ?? null;
    destinations.push({
      name: config.name,
      url: config.url,
      providers: config.providers ? new Set(config.providers) : null,
      sources: config.sources ? new Set(config.sources) : null,
      types: types && {
        exact: new Set(types.filter((t) => !t.endsWith("*"))),
        prefixes: types.filter((t) => t.endsWith("*")).map((t) => t.slice(0, -1)),
      },
      filter,
      signingKey,
      timeoutMs: config.timeout_ms ?? DEFAULT_TIMEOUT_MS,
      circuitFailures: config.circuit_failures ?? DEFAULT_CIRCUIT_FAILURES,
      probeSeconds: config.circuit_probe_seconds ?? DEFAULT_CIRCUIT_PROBE_SECONDS,
      ratePerSecond: config.rate_per_second ?? null,
      headers,
      transform: config.transform ?? null,
      config,
    });
  });
  return errors.length ? { ok: false, errors } : { ok: true, destinations };
}

/** The secret bindings a header value names. */
export function placeholders(value: unknown): string[] {
  return typeof value === "string" ? [...value.matchAll(PLACEHOLDER)].map((match) => match[1]!) : [];
}

/**
 * A destination's headers with each `${NAME}` replaced by the secret binding NAME. Errors name
 * the header by its position (a name is shown only when it is a reserved one, never text that
 * could be a pasted secret), and never a value or a binding's name.
 */
function resolveHeaders(headers: Record<string, string>, env: Env, ownSecrets: ReadonlySet<string>, label: string, errors: string[]): [string, string][] {
  const resolved: [string, string][] = [];
  const seen = new Set<string>();
  Object.entries(headers).forEach(([name, template], index) => {
    const at = `${label}[${index}]`;
    if (!HEADER_NAME.test(name)) return errors.push(`${at}: its name must be an HTTP header name (letters, digits and !#$%&'*+.^_\`|~-)`);
    if (RESERVED_HEADER.test(name)) {
      // Named only when it is one of the fixed names: a webhook-* or x-edgehook-* suffix is text the operator typed.
      const which = FIXED_RESERVED.has(name.toLowerCase()) ? `.${name.toLowerCase()}` : `[${index}]`;
      return errors.push(`${label}${which}: is reserved (webhook-*, x-edgehook-*, content-type, host and content-length are set by edgehook)`);
    }
    if (seen.has(name.toLowerCase())) return errors.push(`${at}: names a header that is already set (names are case-insensitive)`);
    seen.add(name.toLowerCase());
    if (placeholders(template).some((binding) => ownSecrets.has(binding))) {
      return errors.push(`${at}: a \${NAME} in its value names a secret edgehook keeps to itself (ADMIN_TOKEN, ALERT_*, a source's or a destination's signing secret)`);
    }
    let missing = false;
    const value = template.replace(PLACEHOLDER, (_, binding: string) => {
      const secret = BINDING_NAME.test(binding) ? env[binding] : undefined;
      if (typeof secret !== "string" || secret === "") missing = true;
      return typeof secret === "string" ? secret : "";
    });
    if (missing) return errors.push(`${at}: a \${NAME} in its value names a secret binding that is not set (NAME: A-Z, 0-9, _)`);
    // Printable ASCII only: a line break would end the header (or smuggle another), and for any
    // other byte the runtime logs a warning quoting the whole value, secret and all.
    if (!/^[\t\x20-\x7E]*$/.test(value) || value.length > 8_192) {
      return errors.push(`${at}: its value (with its secrets filled in) must be one line of at most 8192 printable ASCII characters`);
    }
    resolved.push([name, value]);
  });
  return resolved;
}

/** Where an event goes, and the destinations whose filter could not decide (never an exception). */
export interface Routing {
  destinations: Destination[];
  /** Destinations left out because evaluating their filter failed, with the reason to record. */
  skipped: { destination: string; reason: string }[];
}

/**
 * The destinations an event goes to: provider, source, then type (exact or prefix*), then filter. A filter
 * that cannot decide (over its budget, #9.7) leaves its destination out, in `skipped` with why;
 * `evaluate` never throws, so neither does this.
 */
export function route(destinations: readonly Destination[], event: { provider: string; source: string; type: string; envelope: unknown }): Routing {
  const routing: Routing = { destinations: [], skipped: [] };
  for (const destination of destinations) {
    if (destination.providers && !destination.providers.has(event.provider)) continue;
    if (destination.sources && !destination.sources.has(event.source)) continue;
    if (destination.types) {
      const { exact, prefixes } = destination.types;
      if (!exact.has(event.type) && !prefixes.some((prefix) => event.type.startsWith(prefix))) continue;
    }
    if (destination.filter === null) {
      routing.destinations.push(destination);
      continue;
    }
    const result = destination.filter.evaluate(event.envelope);
    if (result.outcome === "match") routing.destinations.push(destination);
    else if (result.outcome !== "no_match") routing.skipped.push({ destination: destination.name, reason: result.reason });
  }
  return routing;
}
