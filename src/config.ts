/**
 * What the arrays of tables in [vars] (DESTINATIONS, SOURCES) share: reading them, and saying
 * what is wrong with an entry as "field: rule". superstruct's own messages quote the rejected
 * value, which may be a secret pasted into the wrong field, so they never reach a response or a log.
 */
import type { Failure } from "superstruct";

/** wrangler.toml gives an array; .dev.vars and `wrangler secret` can only give text, so accept JSON text too. */
export function fromJsonText(raw: unknown): unknown {
  if (typeof raw !== "string") return raw;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

/** `VAR[i]`, with the entry's name only when it passes the name rule (an invalid one may be anything). */
export function entryLabel(variable: string, entry: unknown, index: number, validName: RegExp): string {
  const name = typeof entry === "object" && entry !== null && "name" in entry ? entry.name : undefined;
  return `${variable}[${index}]${typeof name === "string" && validName.test(name) ? ` (${name})` : ""}`;
}

/** An unknown key is shown only when it looks like a misspelt field name, never when it could be pasted text. */
const FIELD_LIKE = /^[a-z][a-z_]{0,23}$/;

/**
 * `.field: rule` for one failure, from `rules` (each field's rule as stated to the operator);
 * `notATable` is said of an entry that is not a table at all.
 */
export function describeFailure(failure: Failure, rules: Readonly<Record<string, string>>, notATable: string): string {
  const path: unknown[] = failure.path;
  const field = path[0];
  if (typeof field !== "string") return `: ${notATable}`;
  if (!Object.hasOwn(rules, field)) {
    return FIELD_LIKE.test(field) ? `.${field}: is not a known field` : ": has a field that is not a known field (its name is not shown)";
  }
  const rule = rules[field]!;
  if (failure.value === undefined) return `.${field}: is required; ${rule}`;
  // Positions in a list are shown; keys inside a table (a header's name) are text the operator typed, which could be a pasted secret.
  return `.${[field, ...path.slice(1).filter((key) => typeof key === "number")].join(".")}: ${rule}`;
}
