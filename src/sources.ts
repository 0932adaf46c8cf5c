/**
 * Sources: where webhooks arrive, one path each (`POST /webhooks/<name>`), each with its own
 * signing secrets. A company runs several Seismic apps (tenants, sandboxes) and several Zuddl
 * webhooks, each signing with its own secret, so one provider may be served at several paths.
 *
 * Every provider has a built-in source named after it, with fixed binding names (declared by the
 * provider, `Provider.bindings`); it is served whatever SOURCES says, so a mistake there never
 * stops the built-in paths. More are declared in wrangler.toml as the SOURCES var and validated
 * here like DESTINATIONS: errors name the entry, the field and the rule, never the value.
 *
 * A declared source whose secret binding is not set is not a configuration error: like a built-in
 * without its secret, it answers challenges unverified and everything else with 503
 * provider_not_configured (the sender retries), while every other source keeps working. The
 * operator registers the URL (its challenge) before the secret exists, and adding one source
 * before its `wrangler secret put` must not stop the others.
 */
import { object, optional, pattern, refine, string, type Infer } from "superstruct";
import { describeFailure, entryLabel, fromJsonText } from "./config";
import type { Env } from "./env";
import { HttpError, unavailable } from "./errors";
import { findProvider, providers } from "./providers";
import type { Provider, SecretBindings } from "./providers/provider";
import type { ConfiguredSecret } from "./env";

/** A source's name is a path segment and a metrics label: short, lowercase, nothing to escape. */
export const SOURCE_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const BINDING_NAME = /^[A-Z][A-Z0-9_]*$/;

export interface Source {
  name: string;
  provider: Provider;
  /** Binding names, never values; resolved per request by `sourceSecrets`. */
  secretBindings: SecretBindings;
  /** A provider's own source, at /webhooks/<provider>. */
  builtIn: boolean;
}

export const builtInSources: readonly Source[] = providers.map((provider) => ({
  name: provider.name, provider, secretBindings: provider.bindings, builtIn: true,
}));
const builtInByName = new Map(builtInSources.map((source) => [source.name, source]));

const SourceConfig = object({
  name: pattern(string(), SOURCE_NAME),
  provider: refine(string(), "provider", (value) => findProvider(value) !== undefined),
  secret: pattern(string(), BINDING_NAME),
  secret_old: optional(pattern(string(), BINDING_NAME)),
  token: optional(pattern(string(), BINDING_NAME)),
});
export type SourceConfig = Infer<typeof SourceConfig>;

const BINDING_RULE = "must be the name of a secret binding (A-Z, 0-9, _), not the secret itself";
/** Each field's rule as errors state it (see config.ts); `satisfies` keeps it in step with the struct. */
const RULES = {
  name: "must be 1-63 lowercase letters, digits or - starting with a letter or digit",
  provider: `must be one of the providers: ${providers.map((p) => p.name).join(", ")}`,
  secret: BINDING_RULE,
  secret_old: BINDING_RULE,
  token: BINDING_RULE,
} satisfies Record<keyof SourceConfig, string>;

/** Valid: every source served (built-ins first). Invalid: its errors; the built-ins are still served. */
export type SourcesResult = { ok: true; sources: readonly Source[] } | { ok: false; errors: string[] };

let cache: { key: string; result: SourcesResult } | null = null;

/**
 * Validates SOURCES once per isolate and configuration. Only binding names are validated, so
 * the result does not depend on secret values (they are read per request by `sourceSecrets`).
 */
export function loadSources(env: Env): SourcesResult {
  const raw = fromJsonText(env.SOURCES ?? []);
  const key = JSON.stringify(raw) ?? "";
  if (cache?.key !== key) cache = { key, result: parseSources(raw) };
  return cache.result;
}

function parseSources(raw: unknown): SourcesResult {
  if (!Array.isArray(raw)) return { ok: false, errors: ["SOURCES must be an array of tables (or JSON text of one)"] };
  const errors: string[] = [];
  const sources: Source[] = [...builtInSources];
  const names = new Set<string>();
  raw.forEach((entry: unknown, index) => {
    const label = entryLabel("SOURCES", entry, index, SOURCE_NAME);
    const [error, config] = SourceConfig.validate(entry);
    if (error) {
      for (const failure of error.failures()) errors.push(`${label}${describeFailure(failure, RULES, "must be a table with at least name, provider and secret")}`);
      return;
    }
    const provider = findProvider(config.provider)!;
    // A built-in source's path is taken, whatever its provider: a name never shadows another route.
    if (builtInByName.has(config.name)) errors.push(`${label}.name: is the name of a built-in source (${[...builtInByName.keys()].join(", ")})`);
    else if (names.has(config.name)) errors.push(`${label}.name: is used twice`);
    names.add(config.name);
    if (config.token && !provider.authenticate) {
      const takers = providers.filter((p) => p.authenticate).map((p) => p.name);
      errors.push(`${label}.token: only for a provider that takes a token (${takers.join(", ")})`);
    }
    sources.push({
      name: config.name,
      provider,
      secretBindings: { secret: config.secret, secretOld: config.secret_old, token: config.token },
      builtIn: false,
    });
  });
  return errors.length ? { ok: false, errors } : { ok: true, sources };
}

/** The source served at /webhooks/<name>, or undefined: the built-ins always, the others while SOURCES is valid. */
export function findSource(env: Env, name: string): Source | undefined {
  const builtIn = builtInByName.get(name);
  if (builtIn) return builtIn;
  const config = loadSources(env);
  return config.ok ? config.sources.find((source) => source.name === name) : undefined;
}

/**
 * The source a webhook request names. While SOURCES is invalid any name but a built-in's may be
 * one of its sources: 503, so the sender retries and nothing signed is dropped.
 */
export function requireSource(env: Env, name: string): Source {
  const source = findSource(env, name);
  if (source) return source;
  if (!loadSources(env).ok) {
    throw unavailable("invalid_sources", "SOURCES is invalid (see GET /admin/sources); retry later", 60);
  }
  // The code predates sources; kept so existing monitoring and senders read it as before.
  throw new HttpError(404, "unknown_provider", "no source is served at this path");
}

/** Every source name a destination may route on; null while SOURCES is invalid (the names are not known). */
export function configuredSourceNames(env: Env): ReadonlySet<string> | null {
  const config = loadSources(env);
  return config.ok ? new Set(config.sources.map((source) => source.name)) : null;
}

/**
 * Every binding a source verifies with: the built-ins' and, valid or not, each name SOURCES
 * gives. Outbound headers may not name them (deliver/destinations.ts): a signing secret sent
 * downstream would let the receiver forge webhooks.
 */
export function sourceSecretBindings(env: Env): Set<string> {
  const raw = fromJsonText(env.SOURCES ?? []);
  const declared = Array.isArray(raw) ? raw.map((entry: Record<string, unknown> | null) => [entry?.secret, entry?.secret_old, entry?.token]) : [];
  const builtIn = builtInSources.map(({ secretBindings: { secret, secretOld, token } }) => [secret, secretOld, token]);
  return new Set([...builtIn, ...declared].flat().filter((name): name is string => typeof name === "string" && name !== ""));
}

/** What a source verifies requests with, read from its bindings now. */
export interface SourceSecrets {
  /** Current first, then old; unset or empty bindings skipped. */
  signing: ConfiguredSecret[];
  /** The static token requests must carry, when one is configured. */
  token?: string;
}

const bindingValue = (env: Env, name: string | undefined): string | undefined => {
  const value = name ? env[name] : undefined;
  return typeof value === "string" && value !== "" ? value : undefined;
};

/**
 * The secrets a source verifies with, or null when it is not configured: no signing secret, or
 * (a declared source) a token binding it names but that is not set. That source refuses rather
 * than let requests in without the token it was declared with; a built-in's token is optional.
 */
export function sourceSecrets(source: Source, env: Env): SourceSecrets | null {
  const { secret, secretOld, token } = source.secretBindings;
  const signing: ConfiguredSecret[] = [];
  const current = bindingValue(env, secret);
  const old = bindingValue(env, secretOld);
  if (current) signing.push({ slot: "current", value: current });
  if (old) signing.push({ slot: "old", value: old });
  const tokenValue = bindingValue(env, token);
  if (signing.length === 0 || (token && !tokenValue && !source.builtIn)) return null;
  return { signing, ...(tokenValue && { token: tokenValue }) };
}

/** Binding names and whether each is set, never a value: what the operator API and the console show. */
export function bindingStates(source: Source, env: Env) {
  const state = (name: string | undefined) => (name ? { name, set: bindingValue(env, name) !== undefined } : null);
  const { secret, secretOld, token } = source.secretBindings;
  return { secret: state(secret)!, secretOld: state(secretOld), token: state(token) };
}
