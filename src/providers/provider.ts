import { StructError, type Struct } from "superstruct";
import { HttpError } from "../errors";
import { compile } from "./compile";

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

/** Names of the secret bindings a source reads (never their values). */
export interface SecretBindings {
  /** The current signing secret. */
  secret: string;
  /** The previous signing secret, while a rotation is in progress. */
  secretOld?: string;
  /** A static token the sender adds to each request (providers with `authenticate` only). */
  token?: string;
}

/**
 * A provider is one value: its headers, challenge forms and schemas, and the binding names of
 * its built-in source. Which secrets verify a request is the source's business (src/sources.ts):
 * one provider may be served at several paths, each with its own secrets.
 * The request path never asks which provider it is talking to.
 */
export interface Provider {
  name: string;
  /** The bindings of the built-in source served at /webhooks/<name>: the one place these names are written. */
  bindings: SecretBindings;
  /** Signature candidates carried by the request, as hex strings (prefixes such as `sha256=` removed). */
  signatures(headers: Headers): string[];
  /**
   * Checks the static token the source expects (called only when one is configured); throws
   * HttpError. A provider without it takes no token.
   */
  authenticate?(headers: Headers, token: string): void;
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

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
