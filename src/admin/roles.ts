/**
 * Roles: who may read (viewer) and who may also change state (operator), from OPERATORS and VIEWERS.
 * Each is a comma-separated list of email addresses, service tokens' client ids, or `*@domain`.
 */
import type { Context, MiddlewareHandler } from "hono";
import type { AppEnv, Env, Role } from "../env";
import { HttpError } from "../errors";

type Rules = { ok: true; operators: string[]; viewers: string[] } | { ok: false; error: string };

/** Only a whole domain may be a wildcard: `*` anywhere else would be a pattern nobody meant. */
const WILDCARD = /^\*@[^@*\s]+$/;

function parseList(name: "OPERATORS" | "VIEWERS", value: string | undefined): string[] | string {
  const entries = (value ?? "").split(",").map((entry) => asciiLower(entry.trim())).filter(Boolean);
  const bad = entries.findIndex((entry) => (entry.includes("*") ? !WILDCARD.test(entry) : /\s/.test(entry)));
  // The entry's position, never its text: a list pasted into the wrong variable may hold a secret.
  if (bad >= 0) return `${name}: entry ${bad + 1} is not an email address, a service token's client id or *@domain`;
  return entries;
}

/** OPERATORS and VIEWERS, or the first mistake in them (naming the variable and the entry's position). */
export function roleRules(env: Env): Rules {
  const operators = parseList("OPERATORS", env.OPERATORS);
  if (typeof operators === "string") return { ok: false, error: operators };
  const viewers = parseList("VIEWERS", env.VIEWERS);
  if (typeof viewers === "string") return { ok: false, error: viewers };
  return { ok: true, operators, viewers };
}

/** A-Z only: Unicode case rules fold other letters into ASCII ones (the Kelvin sign K into k), which would let one address match another. */
const asciiLower = (text: string) => text.replace(/[A-Z]/g, (letter) => letter.toLowerCase());

function matches(identity: string, pattern: string): boolean {
  if (!pattern.startsWith("*@")) return identity === pattern;
  const at = identity.lastIndexOf("@");
  return at > 0 && identity.slice(at + 1) === pattern.slice(2);
}

/** The identity's role (an operator is also a viewer), or null: assigned nothing, it gets nothing. Case-insensitive, as addresses are. */
export function roleOf(rules: { operators: string[]; viewers: string[] }, identity: string): Role | null {
  const name = asciiLower(identity);
  if (rules.operators.some((pattern) => matches(name, pattern))) return "operator";
  if (rules.viewers.some((pattern) => matches(name, pattern))) return "viewer";
  return null;
}

/** 403 naming the role needed, for a signed-in identity whose role falls short. */
export const forbidden = (role: Role) =>
  new HttpError(403, "forbidden", role === "operator" ? "this needs the operator role (OPERATORS)" : "this needs the viewer role (VIEWERS or OPERATORS)", { role });

/** Behind the sign-in: the signed-in identity must hold the role the request needs (an operator holds both). */
export function requireRole(needed: Role | ((c: Context<AppEnv>) => Role)): MiddlewareHandler<AppEnv> {
  return async function requireRole(c, next) {
    const role = typeof needed === "function" ? needed(c) : needed;
    const held = c.get("identity")?.role;
    if (!held || (role === "operator" && held !== "operator")) throw forbidden(role);
    await next();
  };
}
