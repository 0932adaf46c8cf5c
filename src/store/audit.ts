/**
 * D1 access for the audit log: who did what, when, from where, and with what result. A record is
 * written before its action runs (result "pending") and finished after it (admin/audit.ts).
 */
import type { Role } from "../env";
import { HttpError } from "../errors";
import { decodeCursor, keysetPage } from "./events";

export type AuditVia = "access" | "token" | "session";

export const AUDIT_ACTIONS = ["pause", "resume", "replay", "bulk_replay", "release", "preview", "sign_in", "sign_out"] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export interface AuditIntent {
  at: number;
  actor: string;
  via: AuditVia;
  role: Role;
  address: string | null;
  action: AuditAction;
  target: string | null;
  /** Small JSON: parameters and counts, never a payload or a secret. */
  detail: Record<string, unknown>;
}

/** A record as stored: the intent, its detail as JSON text, and what came of it. */
export interface AuditRow extends Omit<AuditIntent, "detail"> {
  id: number;
  detail: string | null;
  result: string;
  status: number | null;
}

export const AUDIT_PENDING = "pending";

const detailJson = (detail: Record<string, unknown>) => (Object.keys(detail).length ? JSON.stringify(detail) : null);

/** Records an action, with its result when it is already known (a sign-in), else as pending; answers the record's id. */
export async function recordAudit(db: D1Database, intent: AuditIntent, outcome: { result: string; status: number | null } = { result: AUDIT_PENDING, status: null }): Promise<number> {
  const row = await db
    .prepare(
      `INSERT INTO audit_log (at, actor, via, role, address, action, target, detail, result, status)
       VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id`,
    )
    .bind(intent.at, intent.actor, intent.via, intent.role, intent.address, intent.action, intent.target, detailJson(intent.detail), outcome.result, outcome.status)
    .first<{ id: number }>();
  return row!.id;
}

/** Finishes a pending record: the result, the status answered, and the detail the action added (a count). */
export async function finishAudit(db: D1Database, id: number, result: string, status: number, detail: Record<string, unknown>): Promise<void> {
  await db.prepare(`UPDATE audit_log SET result = ?2, status = ?3, detail = ?4 WHERE id = ?1`).bind(id, result, status, detailJson(detail)).run();
}

export interface AuditFilter {
  actor?: string;
  action?: string;
  target?: string;
  since?: number;
  until?: number;
}

/** Newest first, keyset-paginated on (at, id) like the other lists. */
export async function listAudit(db: D1Database, filter: AuditFilter, limit: number, cursor: string | null): Promise<{ records: AuditRow[]; nextCursor: string | null }> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (sql: string, ...values: unknown[]) => {
    params.push(...values);
    where.push(sql.replace(/\?(\d)/g, (_, n: string) => `?${params.length - values.length + Number(n)}`));
  };
  if (filter.actor) add("actor = ?1", filter.actor);
  if (filter.action) add("action = ?1", filter.action);
  if (filter.target) add("target = ?1", filter.target);
  if (filter.since !== undefined) add("at >= ?1", filter.since);
  if (filter.until !== undefined) add("at < ?1", filter.until);
  const after = cursor ? decodeCursor(cursor) : null;
  if (cursor && !(after && /^\d+$/.test(after.key))) throw new HttpError(400, "invalid_cursor", "cursor is not one this API returned");
  if (after) add("(at < ?1 OR (at = ?1 AND id < ?2))", after.receivedAt, Number(after.key));
  params.push(limit + 1);
  const { results } = await db
    .prepare(`SELECT * FROM audit_log ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY at DESC, id DESC LIMIT ?${params.length}`)
    .bind(...params)
    .all<AuditRow>();
  const { rows, nextCursor } = keysetPage(results, limit, (last) => ({ receivedAt: last.at, key: String(last.id) }));
  return { records: rows, nextCursor };
}
