import { StructError, type Struct } from "superstruct";
import type { Env } from "../env";
import { HttpError } from "../errors";
import { compile } from "./compile";
import type { ConfiguredSecret } from "../receive/signature";

/** What the request path needs to know about an accepted event, whatever its provider. */
export interface ParsedEvent {
  /** The provider's own id for the event, covered by the signature: the idempotency key. */
  eventId: string;
  type: string;
  /** False for a well-formed envelope whose type this gateway has no schema or name for. */
  knownType: boolean;
  tenant: string | null;
  occurredAt: string | null;
}

/**
 * A provider is one value: its headers, secrets, challenge forms and schemas.
 * The request path never asks which provider it is talking to.
 */
export interface Provider {
  name: string;
  /** Configured signing secrets, current first; empty when the provider is not configured. */
  secrets(env: Env): ConfiguredSecret[];
  /** Signature candidates carried by the request, as hex strings (prefixes such as `sha256=` removed). */
  signatures(headers: Headers): string[];
  /** Extra, provider-specific authentication (a static token header); throws HttpError. */
  authenticate?(headers: Headers, env: Env): void;
  /** A URL-verification request, answered and never stored; null for anything else. */
  challenge?(body: unknown): Response | null;
  /** Validates the payload and extracts what the gateway indexes; throws `schemaMismatch`. */
  parse(body: unknown): ParsedEvent;
}

/** A payload that does not match its schema: 422, naming the JSONPath of the first failure. */
export const schemaMismatch = (message: string, path: string) =>
  new HttpError(422, "schema_mismatch", message, { path });

/**
 * Validates against a struct: the compiled predicate first (fast), superstruct for the
 * failure path and message of a payload it rejects. Throws `schemaMismatch` under `basePath`.
 */
export function check<T, S>(value: unknown, struct: Struct<T, S>, basePath = "$"): T {
  if (compile(struct as Struct<unknown, unknown>)(value)) return value as T;
  let outcome: [StructError, undefined] | [undefined, T];
  try {
    outcome = struct.validate(value);
  } catch (err) {
    // superstruct prints the failing value into its message; a deeply nested one overflows the stack.
    if (err instanceof RangeError) throw schemaMismatch(`${basePath} is nested too deeply`, basePath);
    throw err;
  }
  const [error, result] = outcome;
  if (!error) return result;
  throw mismatchOf(error, basePath);
}

function mismatchOf(error: StructError, basePath: string): HttpError {
  const failure = error.failures()[0] ?? error;
  const path = basePath + failure.path.map((key) => (typeof key === "number" ? `[${key}]` : `.${String(key)}`)).join("");
  const expected = failure.refinement ?? failure.type;
  const message =
    failure.value === undefined
      ? `${path} is required (${expected})`
      : `${path} must be ${expected}, got ${describe(failure.value)}`;
  return schemaMismatch(message, path);
}

/** Names a value's kind without echoing payload content back. */
function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

/** The secrets of a provider from its two bindings, skipping unset or empty ones. */
export function secretsFrom(current: string | undefined, old: string | undefined): ConfiguredSecret[] {
  const secrets: ConfiguredSecret[] = [];
  if (current) secrets.push({ slot: "current", value: current });
  if (old) secrets.push({ slot: "old", value: old });
  return secrets;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
