/**
 * Telling an operator when something breaks: each place that sees something alert-worthy notes
 * it here (kind, subject, how many). Notes of one kind and subject are coalesced in D1, and a
 * send is scheduled through the alerts queue: after ALERT_GROUP_WAIT_SECONDS (so a burst makes
 * one alert), then at most one per ALERT_COOLDOWN_SECONDS, each carrying the count since the
 * last (alerts/send.ts sends them). Like telemetry, noting never changes what happens to an
 * event: anything that fails here is logged and dropped, and without ALERT_URL it does nothing.
 * While an ALERT_* setting is wrong, notes are counted but nothing is scheduled: they wait in D1,
 * and the first cron run after the fix schedules them.
 */
import { withDeadline } from "../deadline";
import { numberVar, type Env } from "../env";
import { MAX_QUEUE_DELAY_SECONDS, sendAll } from "../queues";
import { noteAlerts, rescheduleStale, type AlertNote, type AlertRow, type AlertTiming } from "../store/alerts";
import { alertConfig } from "./config";

export const ALERT_KINDS = [
  "delivery_dead", "circuit_opened", "circuit_closed", "destination_paused", "destination_resumed",
  "payload_quarantined", "configuration_invalid", "sweep_requeued", "dead_letters_received", "transform_failed",
] as const;
export type AlertKind = (typeof ALERT_KINDS)[number];

const DEFAULT_COOLDOWN_SECONDS = 900;
const DEFAULT_GROUP_WAIT_SECONDS = 30;
/** A scheduled send whose message has not come this long after it was due was lost: the cron schedules it again. */
const STALE_MS = 20 * 60_000;
/** Lost sends one cron run schedules again at most: 10 queue calls of 100. */
const RESCHEDULE_LIMIT = 1_000;
/** How long noting may take before the caller goes on without it. */
const NOTE_MS = 5_000;

export const alertTiming = (env: Env): AlertTiming => ({
  cooldownMs: numberVar(env.ALERT_COOLDOWN_SECONDS, DEFAULT_COOLDOWN_SECONDS) * 1000,
  groupWaitMs: numberVar(env.ALERT_GROUP_WAIT_SECONDS, DEFAULT_GROUP_WAIT_SECONDS) * 1000,
});

/** Something alert-worthy happened `count` times to `subject` (a destination, a source, "DESTINATIONS", the sweep). */
export interface Notice {
  kind: AlertKind;
  subject: string;
  count: number;
}

export async function notify(env: Env, notes: Notice[], now = Date.now()): Promise<void> {
  const counted = notes.filter((note) => note.count > 0);
  const checked = alertConfig(env);
  // Off (no ALERT_URL): nothing is noted at all.
  if ((checked.ok && !checked.config) || counted.length === 0) return;
  try {
    const timing = checked.ok ? alertTiming(env) : null;
    const work = (async () => schedule(env, await noteAlerts(env.DB, merge(counted), now, timing), now))();
    // Bounded: a D1 or queue that hangs must not hold up the delivery path that noted this.
    await withDeadline(work, NOTE_MS, () => new Error(`noting alerts took over ${NOTE_MS} ms`));
  } catch (err) {
    console.error(JSON.stringify({ outcome: "alert_note_failed", kinds: counted.map((n) => n.kind), error: String(err) }));
  }
}

/**
 * The cron's safety net: a key whose scheduled send was lost (its message never came), or that
 * waited unscheduled while an ALERT_* setting was wrong, is scheduled again. While a setting is
 * wrong, nothing is: each run says so instead (by setting and rule, never a value).
 */
export async function rescheduleLostAlerts(env: Env, now: number): Promise<{ rescheduled: number }> {
  const checked = alertConfig(env);
  if (!checked.ok) {
    console.error(JSON.stringify({ outcome: "alerts_misconfigured", errors: checked.errors, action: "nothing is sent; alerts wait in D1 until the settings are fixed" }));
    return { rescheduled: 0 };
  }
  if (!checked.config) return { rescheduled: 0 };
  const rows = await rescheduleStale(env.DB, now - STALE_MS, now, RESCHEDULE_LIMIT);
  await schedule(env, rows, now);
  return { rescheduled: rows.length };
}

/**
 * One queue message per scheduled key, delayed until it is due. It carries the due time it was
 * sent for, so the consumer tells the key's scheduled message from an older copy.
 */
export async function schedule(env: Env, rows: AlertRow[], now: number): Promise<void> {
  await sendAll(
    env.ALERTS_QUEUE!,
    rows.map((row) => ({
      body: { alert: { kind: row.kind, subject: row.subject }, due: row.due_at },
      contentType: "json" as const,
      delaySeconds: Math.min(MAX_QUEUE_DELAY_SECONDS, Math.max(0, Math.ceil(((row.due_at ?? now) - now) / 1000))),
    })),
  );
}

function merge(notes: AlertNote[]): AlertNote[] {
  const merged = new Map<string, AlertNote>();
  for (const note of notes) {
    const key = JSON.stringify([note.kind, note.subject]);
    const seen = merged.get(key);
    if (seen) seen.count += note.count;
    else merged.set(key, { ...note });
  }
  return [...merged.values()];
}
