/**
 * Destinations: where accepted events are forwarded, declared in wrangler.toml as the
 * DESTINATIONS var and validated here. A configuration with any error is reported (in
 * /healthz and the logs) and delivers nothing: events wait in the retry path until it is fixed.
 */
import { array, integer, max, min, nonempty, object, optional, pattern, refine, size, string, type Failure, type Infer } from "superstruct";
import type { Env } from "../env";
import { compileFilter, JsonPathError, type CompiledFilter } from "./jsonpath";

const DEFAULT_TIMEOUT_MS = 10_000;

function isAllowedUrl(value: string): boolean {
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

const DestinationConfig = object({
  name: pattern(string(), /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/),
  url: refine(string(), "url", (value) => isAllowedUrl(value) || "must be https (or http to 127.0.0.1/localhost)"),
  providers: optional(size(array(nonempty(string())), 1, 20)),
  types: optional(size(array(pattern(string(), /^[^*]+\*?$|^\*$/)), 1, 100)),
  filter: optional(nonempty(string())),
  secret: optional(pattern(string(), /^[A-Z][A-Z0-9_]*$/)),
  timeout_ms: optional(max(min(integer(), 100), 30_000)),
});
export type DestinationConfig = Infer<typeof DestinationConfig>;

export interface Destination {
  name: string;
  url: string;
  providers: ReadonlySet<string> | null;
  types: { exact: ReadonlySet<string>; prefixes: readonly string[] } | null;
  filter: CompiledFilter | null;
  /** Key bytes of the Standard Webhooks secret, or null to forward unsigned. */
  signingKey: Uint8Array | null;
  timeoutMs: number;
  /** The declaration as written, for /healthz and the operator API (never the secret's value). */
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
  const secretNames = Array.isArray(raw) ? raw.map((d: { secret?: unknown }) => (typeof d?.secret === "string" ? d.secret : "")) : [];
  // The key holds secret values only in this isolate's memory, to notice a `wrangler secret put`.
  const key = JSON.stringify([raw, secretNames.map((name) => (name ? String(env[name] ?? "") : ""))]);
  if (cache?.key !== key) cache = { key, result: parseDestinations(raw, env) };
  return cache.result;
}

/** wrangler.toml gives an array; .dev.vars and `wrangler secret` can only give text, so accept JSON text too. */
function fromJsonText(raw: unknown): unknown {
  if (typeof raw !== "string") return raw;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

function parseDestinations(raw: unknown, env: Env): DestinationsResult {
  if (!Array.isArray(raw)) return { ok: false, errors: ["DESTINATIONS must be an array of tables (or JSON text of one)"] };
  const errors: string[] = [];
  const destinations: Destination[] = [];
  const names = new Set<string>();
  raw.forEach((entry, index) => {
    const [error, config] = DestinationConfig.validate(entry);
    const label = `DESTINATIONS[${index}]${typeof entry?.name === "string" ? ` (${entry.name})` : ""}`;
    if (error) {
      for (const failure of error.failures()) {
        const field = failure.path.join(".") || "(table)";
        errors.push(`${label}.${field}: ${describeFailure(failure)}`);
      }
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
      if (!signingKey) errors.push(`${label}.secret: binding ${config.secret} is missing or not whsec_<base64> (16+ bytes)`);
    }
    const types = config.types ?? null;
    destinations.push({
      name: config.name,
      url: config.url,
      providers: config.providers ? new Set(config.providers) : null,
      types: types && {
        exact: new Set(types.filter((t) => !t.endsWith("*"))),
        prefixes: types.filter((t) => t.endsWith("*")).map((t) => t.slice(0, -1)),
      },
      filter,
      signingKey,
      timeoutMs: config.timeout_ms ?? DEFAULT_TIMEOUT_MS,
      config,
    });
  });
  return errors.length ? { ok: false, errors } : { ok: true, destinations };
}

function describeFailure(failure: Failure): string {
  if (failure.value === undefined) return `is required (${failure.type})`;
  if (failure.type === "never") return "is not a known field";
  return failure.message;
}

/** Where an event goes, and the destinations whose filter could not decide (never an exception). */
export interface Routing {
  destinations: Destination[];
  /** Destinations left out because evaluating their filter failed, with the reason to record. */
  skipped: { destination: string; reason: string }[];
}

/** The destinations an event goes to: provider, then type (exact or prefix*), then filter. */
export function route(destinations: readonly Destination[], event: { provider: string; type: string; envelope: unknown }): Routing {
  const routing: Routing = { destinations: [], skipped: [] };
  for (const destination of destinations) {
    if (destination.providers && !destination.providers.has(event.provider)) continue;
    if (destination.types) {
      const { exact, prefixes } = destination.types;
      if (!exact.has(event.type) && !prefixes.some((prefix) => event.type.startsWith(prefix))) continue;
    }
    if (destination.filter === null || destination.filter.matches(event.envelope)) routing.destinations.push(destination);
  }
  return routing;
}
