/**
 * The audit log: every operator action, on the admin API and in the console, recorded with who
 * asked (identity, role, how they signed in, their address), what (the action, its target, its
 * parameters) and the result. Writing the record is part of the action: it is written before the
 * action runs, and when it cannot be, the action is refused (503 audit_unavailable) and nothing is
 * done. Unlike telemetry, which never changes an outcome, an action nobody can account for later
 * is one the gateway should not take (README "Audit log").
 */
import type { Context, MiddlewareHandler } from "hono";
import { routePath } from "hono/route";
import type { AppEnv, AuditNote, Identity } from "../env";
import { HttpError, unavailable } from "../errors";
import { AUDIT_ACTIONS, finishAudit, recordAudit, type AuditAction, type AuditFilter, type AuditIntent, type AuditRow, type AuditVia } from "../store/audit";
import { iso, timeParam } from "./operations";
import type { AuditRecordView } from "./schemas";

/** Where the request came in: the admin API (bearer token or Access) or the console (session or Access). */
export type AuditChannel = "admin" | "console";

/** What an audited request asks, as the action's description reads it: the route's parameters and its query (API) or form (console). */
interface AuditRequest {
  params: Record<string, string>;
  input: Record<string, string | undefined>;
}

interface AuditedAction {
  action: AuditAction;
  /** The target and the parameters worth keeping; never a payload (a pasted preview's body stays out). */
  describe: (request: AuditRequest) => { target: string | null; detail: Record<string, unknown> };
}

/** The audit log keeps parameters, not whatever a client puts in them: each is cut to this length. */
const MAX_VALUE_LENGTH = 200;
const short = (value: string | undefined) => (value === undefined || value === "" ? undefined : value.slice(0, MAX_VALUE_LENGTH));

const onDestination = (action: AuditAction): AuditedAction => ({ action, describe: ({ params }) => ({ target: params.name ?? null, detail: {} }) });
const replay: AuditedAction = { action: "replay", describe: ({ params, input }) => ({ target: params.id ?? null, detail: { destination: short(input.destination) } }) };
const bulkReplay: AuditedAction = {
  action: "bulk_replay",
  describe: ({ input }) => ({
    target: short(input.destination) ?? null,
    detail: { filter: { status: short(input.status), destination: short(input.destination), since: short(input.since) }, continued: Boolean(input.cursor) },
  }),
};
const release: AuditedAction = { action: "release", describe: ({ params, input }) => ({ target: params.id ?? null, detail: { force: input.force === "true" } }) };

/** The audited routes, by method and route template (routePath), on both channels. */
const AUDITED: Record<string, AuditedAction> = {
  "POST /admin/destinations/:name/pause": onDestination("pause"),
  "POST /admin/destinations/:name/resume": onDestination("resume"),
  // The request's body (an event's id, or a pasted payload) is the handler's to note: only the event's id or the provider.
  "POST /admin/destinations/:name/preview": onDestination("preview"),
  "POST /admin/events/:id/replay": replay,
  "POST /admin/replay": bulkReplay,
  "POST /admin/quarantine/:id/release": release,
  "POST /console/destinations/:name/pause": onDestination("pause"),
  "POST /console/destinations/:name/resume": onDestination("resume"),
  "POST /console/events/:id/preview": { action: "preview", describe: ({ params, input }) => ({ target: short(input.destination) ?? null, detail: { eventId: params.id } }) },
  "POST /console/events/:id/replay": replay,
  "POST /console/replay": bulkReplay,
  "POST /console/quarantine/:id/release": release,
};

export const auditUnavailable = () => unavailable("audit_unavailable", "the audit log could not record this action, so it was not done; try again");

/** Adds to the record of the request's action (no-op on a request that is not audited). */
export function noteAudit(c: Context<AppEnv>, detail: Record<string, unknown>, result?: string): void {
  const note = c.get("audit");
  if (!note) return;
  // A handler's note can carry what a request sent (an id, a provider's name): cut like every parameter, so
  // text pasted into the wrong field never lands in the log whole.
  for (const [key, value] of Object.entries(detail)) note.detail[key] = typeof value === "string" ? short(value) : value;
  if (result) note.result = result;
}

function viaOf(identity: Identity, channel: AuditChannel): AuditVia {
  if (identity.via === "access") return "access";
  return channel === "admin" ? "token" : "session";
}

/** A record's who, when and from where. */
export function auditIntent(c: Context<AppEnv>, identity: Identity, channel: AuditChannel, action: AuditAction, target: string | null, detail: Record<string, unknown>): AuditIntent {
  return {
    at: Date.now(), actor: identity.name, via: viaOf(identity, channel), role: identity.role,
    address: c.req.header("cf-connecting-ip") ?? null, action, target, detail,
  };
}

/**
 * Records a console sign-in (the token form; with Access, signing in happens at Cloudflare's edge).
 * Refused (503) when it cannot be recorded, as every action is.
 */
export async function recordSignIn(c: Context<AppEnv>, identity: Identity, status: number): Promise<void> {
  await recordAudit(c.env.DB, auditIntent(c, identity, "console", "sign_in", null, {}), { result: "ok", status }).catch(() => {
    throw auditUnavailable();
  });
}

/**
 * Records a console sign-out by whoever was signed in (nobody: nothing to record). The one action
 * never refused for its record: refusing would keep a session open that its holder meant to end.
 */
export async function recordSignOut(c: Context<AppEnv>, identity: Identity | null, status: number): Promise<void> {
  if (!identity) return;
  await recordAudit(c.env.DB, auditIntent(c, identity, "console", "sign_out", null, {}), { result: "ok", status }).catch((err: unknown) => {
    console.error(JSON.stringify({ outcome: "audit_sign_out_failed", error: String(err) }));
  });
}

/** The route's parameters by name, read from the path against its template (a "*" middleware sees no route's parameters). */
function paramsOf(template: string, path: string): Record<string, string> {
  const names = template.split("/");
  const values = path.split("/");
  const params: Record<string, string> = {};
  names.forEach((name, i) => {
    if (!name.startsWith(":") || values[i] === undefined) return;
    try {
      params[name.slice(1)] = short(decodeURIComponent(values[i]))!;
    } catch {
      params[name.slice(1)] = short(values[i])!;
    }
  });
  return params;
}

async function inputOf(c: Context<AppEnv>, channel: AuditChannel): Promise<Record<string, string | undefined>> {
  if (channel === "admin") return c.req.query();
  const form = await c.req.parseBody();
  return Object.fromEntries(Object.entries(form).filter((entry): entry is [string, string] => typeof entry[1] === "string"));
}

/**
 * Behind the sign-in, before the role check: records every audited action of an identified
 * caller, refused ones (403) included. The record is written first (pending); failing that, the
 * action is refused. Its result (ok, or the error's code) and status are written after it.
 */
export function auditActions(channel: AuditChannel): MiddlewareHandler<AppEnv> {
  return async function auditActions(c, next) {
    const template = routePath(c, -1);
    const audited = AUDITED[`${c.req.method} ${template}`];
    const identity = c.get("identity");
    if (!audited || !identity) return next();
    const { target, detail } = audited.describe({ params: paramsOf(template, c.req.path), input: await inputOf(c, channel) });
    const note: AuditNote = { detail: { ...detail } };
    c.set("audit", note);
    const id = await recordAudit(c.env.DB, auditIntent(c, identity, channel, audited.action, target, detail)).catch(() => {
      throw auditUnavailable();
    });
    await next();
    const status = c.res.status;
    const result = c.error instanceof HttpError ? c.error.code : c.error ? "internal_error" : (note.result ?? (status < 400 ? "ok" : `http_${status}`));
    // The action is done (or refused) by now: a record left pending says it began and its end was not written.
    await finishAudit(c.env.DB, id, result, status, note.detail).catch((err: unknown) => {
      console.error(JSON.stringify({ outcome: "audit_finish_failed", auditId: id, error: String(err) }));
    });
  };
}

/** The audit log's filters, as the operator API and the console take them. */
export function auditFilter(query: Record<string, string | undefined>): AuditFilter {
  // The OpenAPI description lists the actions: anything else is a mistake to say, not a filter that matches nothing.
  if (query.action && !(AUDIT_ACTIONS as readonly string[]).includes(query.action)) {
    throw new HttpError(400, "invalid_action", `action must be one of ${AUDIT_ACTIONS.join(", ")}`);
  }
  return {
    actor: query.actor || undefined, action: query.action || undefined, target: query.target || undefined,
    since: timeParam(query.since, "since"), until: timeParam(query.until, "until"),
  };
}

export function auditView(row: AuditRow): AuditRecordView {
  return {
    id: row.id, at: iso(row.at), actor: row.actor, via: row.via, role: row.role, address: row.address, action: row.action, target: row.target,
    detail: row.detail === null ? null : (JSON.parse(row.detail) as Record<string, unknown>), result: row.result, status: row.status,
  };
}
