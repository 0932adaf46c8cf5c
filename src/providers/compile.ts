/**
 * superstruct validates with generators and a context object per node: precise errors, but
 * about half a microsecond a node, which made validation most of the request path's CPU for
 * a session summary. `compile` turns the same structs into a plain predicate that runs first;
 * only a payload it rejects goes through superstruct, for the exact failure path and message.
 * The structs stay the single source of truth (and of the `Infer` types); a test checks that
 * both agree on thousands of mutated payloads.
 *
 * It supports exactly the combinators the provider schemas use: type, array, string, number,
 * boolean, literal, unknown, and the `maybe` / `nonEmpty` wrappers below (superstruct's own
 * optional/nullable/nonempty cannot be told apart from the struct they wrap). Anything else
 * throws when the schema module loads.
 */
import { nonempty, nullable, optional, type Struct } from "superstruct";

/** Any struct, whatever it validates. */
type AnyStruct = Struct<unknown, unknown>;
type Check = (value: unknown) => boolean;

const wrappers = new WeakMap<AnyStruct, { kind: "maybe" | "nonEmpty"; inner: AnyStruct }>();

/** A field providers may omit or send as null. */
export function maybe<T, S>(struct: Struct<T, S>) {
  const wrapped = optional(nullable(struct));
  wrappers.set(wrapped as AnyStruct, { kind: "maybe", inner: struct as AnyStruct });
  return wrapped;
}

/** A string or array that must not be empty. */
export function nonEmpty<T extends string | unknown[], S>(struct: Struct<T, S>) {
  const wrapped = nonempty(struct);
  wrappers.set(wrapped as AnyStruct, { kind: "nonEmpty", inner: struct as AnyStruct });
  return wrapped;
}

const compiled = new WeakMap<AnyStruct, Check>();

export function compile(struct: AnyStruct): Check {
  let check = compiled.get(struct);
  if (!check) {
    check = build(struct);
    compiled.set(struct, check);
  }
  return check;
}

function build(struct: AnyStruct): Check {
  const wrapper = wrappers.get(struct);
  if (wrapper) {
    const inner = compile(wrapper.inner);
    return wrapper.kind === "maybe"
      ? (value) => value === undefined || value === null || inner(value)
      : (value) => inner(value) && (value as string | unknown[]).length > 0;
  }
  switch (struct.type) {
    case "string":
      return (value) => typeof value === "string";
    case "number":
      return (value) => typeof value === "number" && !Number.isNaN(value);
    case "boolean":
      return (value) => typeof value === "boolean";
    case "unknown":
      return () => true;
    case "literal": {
      const constant: unknown = struct.schema;
      return (value) => value === constant;
    }
    case "array": {
      if (!struct.schema) return Array.isArray;
      const element = compile(struct.schema as AnyStruct);
      return (value) => {
        if (!Array.isArray(value)) return false;
        for (const item of value) if (!element(item)) return false;
        return true;
      };
    }
    case "type": {
      const fields = Object.entries(struct.schema as Record<string, AnyStruct>).map(([key, field]) => [key, compile(field)] as const);
      return (value) => {
        if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
        const record = value as Record<string, unknown>;
        for (const [key, check] of fields) if (!check(record[key])) return false;
        return true;
      };
    }
    default:
      throw new Error(`compile: superstruct "${struct.type}" is not supported; add it here or use a supported combinator`);
  }
}
