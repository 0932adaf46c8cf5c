/**
 * The alerts queue's consumer: sends each due alert to ALERT_URL, as Slack-compatible
 * `{"text": …}` (Slack, Teams and Mattermost incoming webhooks take it) or as structured JSON,
 * signed with Standard Webhooks when ALERT_SECRET is set. A target that is down only delays
 * alerts: the message is retried with backoff (its count grows meanwhile), failures are counted
 * in /admin/metrics, and deliveries never wait for any of it (they only note, alerts/notify.ts).
 */
import { signStandardWebhook } from "../deliver/forward";
import type { AlertMessage, Env } from "../env";
import { retrySecondsOverADay as retrySeconds } from "../queues";
import { bytesToHex } from "../crypto";
import { alertDeferred, alertFailed, alertIdle, alertSent, claimAlert, unscheduleAlerts, type AlertRow } from "../store/alerts";
import { CounterDeltas } from "../store/metrics";
import { alertConfig, type AlertConfig } from "./config";
import { ALERT_KINDS, alertTiming, schedule, type AlertKind } from "./notify";

/** Which queue's batches come to this consumer: recognised by configuration, like the dead-letter queue. */
export function alertsQueueName(env: Env): string {
  return env.ALERTS_QUEUE_NAME || "edgehook-alerts";
}
const SEND_TIMEOUT_MS = 5_000;

export async function consumeAlerts(batch: MessageBatch<AlertMessage>, env: Env): Promise<void> {
  const checked = alertConfig(env);
  if (!checked.ok) return await refuseWhileMisconfigured(batch, env, checked.errors);
  await Promise.all(
    batch.messages.map(async (message) => {
      const key = message.body?.alert;
      // Alerts turned off, or a message that names no alert: nothing to send, ever.
      if (!checked.config || !namesAnAlert(key)) {
        message.ack();
        return;
      }
      try {
        await sendOne(env, checked.config, key.kind, key.subject, message);
      } catch (err) {
        console.error(JSON.stringify({ queue: batch.queue, kind: key.kind, outcome: "alert_error", error: String(err) }));
        message.retry({ delaySeconds: retrySeconds(message.attempts) });
      }
    }),
  );
}

const namesAnAlert = (key: AlertMessage["alert"] | undefined): key is AlertMessage["alert"] => typeof key?.kind === "string" && typeof key.subject === "string";

/**
 * A wrong ALERT_* setting: nothing is sent, and no message is retried (a retry could only fail the
 * same way, every backoff, for as long as the setting stays wrong). The alerts stay pending in D1,
 * unscheduled, so the first cron run after the fix schedules them with everything noted meanwhile.
 */
async function refuseWhileMisconfigured(batch: MessageBatch<AlertMessage>, env: Env, errors: string[]): Promise<void> {
  console.error(JSON.stringify({ queue: batch.queue, outcome: "alerts_misconfigured", errors, messages: batch.messages.length }));
  const keys = batch.messages.map((message) => message.body?.alert).filter(namesAnAlert);
  // Should D1 refuse, the alerts keep their past due time, and the cron schedules them once they are long overdue.
  await unscheduleAlerts(env.DB, keys, Date.now()).catch((err: unknown) => console.error(JSON.stringify({ queue: batch.queue, outcome: "alerts_unschedule_failed", error: String(err) })));
  for (const message of batch.messages) message.ack();
}

async function sendOne(env: Env, config: AlertConfig, kind: string, subject: string, message: Message<AlertMessage>): Promise<void> {
  const now = Date.now();
  const row = await claimAlert(env.DB, kind, subject, now, now + SEND_TIMEOUT_MS * 6);
  if (!row) {
    // Nothing pending, or another message for this alert is sending it: that one carries it on.
    await alertIdle(env.DB, kind, subject);
    message.ack();
    return;
  }
  const { cooldownMs } = alertTiming(env);
  const cooldownEnds = (row.last_sent_at ?? 0) + cooldownMs;
  if (now < cooldownEnds) {
    // Early. Only the key's scheduled message (sent for the due time the key has now) carries the
    // alert on, to the cooldown's end: it can come early when the cooldown is longer than a queue
    // delay. Any other is a copy (the queue delivers at least once, or the cron sent one again
    // for a send it thought lost), and ends here: retried, every copy would come back each cooldown.
    const scheduled = message.body.due === row.due_at;
    const dueAt = scheduled ? cooldownEnds : row.due_at;
    await alertDeferred(env.DB, row, dueAt);
    if (scheduled) await schedule(env, [{ ...row, due_at: dueAt }], now);
    message.ack();
    return;
  }
  const counted = new CounterDeltas();
  if (await post(config, row, now)) {
    counted.add("edgehook_alerts_total", { kind, result: "sent" });
    // Sent: a D1 hiccup now must not make the retry send it again, so the record is tried a few times.
    const after = await tries(RECORD_TRIES, () => alertSent(env.DB, row, row.pending, now, cooldownMs, counted.statements(env.DB)));
    // More came while this one was on its way: the next goes out when the cooldown ends.
    if (after?.due_at != null) await schedule(env, [after], now);
    message.ack();
    return;
  }
  counted.add("edgehook_alerts_total", { kind, result: "failed" });
  const delay = retrySeconds(message.attempts);
  await alertFailed(env.DB, row, now + delay * 1000, counted.statements(env.DB));
  message.retry({ delaySeconds: delay });
}

/** Tries to record a sent alert before giving up (the message is then retried, and the alert may be sent twice). */
const RECORD_TRIES = 3;

async function tries<T>(count: number, work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (err) {
      if (attempt >= count) throw err;
    }
  }
}

/** POSTs one alert; true when the target answered 2xx. */
async function post(config: AlertConfig, row: AlertRow, now: number): Promise<boolean> {
  const body = JSON.stringify(render(config, row));
  const headers = new Headers({ "content-type": "application/json", "user-agent": "edgehook" });
  if (config.signingKey) {
    // The same id on every retry of this alert: a receiver can drop a repeat.
    const id = `alert_${await shortHash(`${row.kind}\n${row.subject}\n${row.first_at}`)}`;
    const timestamp = Math.floor(now / 1000);
    headers.set("webhook-id", id);
    headers.set("webhook-timestamp", String(timestamp));
    headers.set("webhook-signature", await signStandardWebhook(config.signingKey, id, timestamp, body));
  }
  try {
    const response = await fetch(config.url, { method: "POST", headers, body, redirect: "manual", signal: AbortSignal.timeout(SEND_TIMEOUT_MS) });
    await response.body?.cancel().catch(() => undefined);
    return response.status >= 200 && response.status < 300;
  } catch {
    return false;
  }
}

async function shortHash(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return bytesToHex(new Uint8Array(digest)).slice(0, 24);
}

/** Kinds whose subject is a destination's name. */
const ABOUT_A_DESTINATION: ReadonlySet<string> = new Set<AlertKind>([
  "delivery_dead", "circuit_opened", "circuit_closed", "destination_paused", "destination_resumed", "transform_failed",
]);

/** Where on the console an operator sees what an alert is about. */
const CONSOLE_PAGES: Record<AlertKind, string> = {
  delivery_dead: "/dead",
  circuit_opened: "/destinations",
  circuit_closed: "/destinations",
  destination_paused: "/destinations",
  destination_resumed: "/destinations",
  payload_quarantined: "/dead",
  configuration_invalid: "/destinations",
  sweep_requeued: "/",
  dead_letters_received: "/dead",
  transform_failed: "/dead",
};

const times = (n: number) => (n === 1 ? "" : ` (${n} times)`);
const SENTENCES: Record<AlertKind, (subject: string, count: number) => string> = {
  delivery_dead: (s, n) => `${n} deliver${n === 1 ? "y" : "ies"} to ${s} went dead (out of attempts); replay them once ${s} is fixed`,
  circuit_opened: (s, n) => `the circuit to ${s} opened${times(n)}: its deliveries are held while a probe is tried`,
  circuit_closed: (s, n) => `the circuit to ${s} closed${times(n)}: what it held is being delivered`,
  destination_paused: (s, n) => `${s} was paused${times(n)}: its deliveries are held until it is resumed`,
  destination_resumed: (s, n) => `${s} was resumed${times(n)}: what it held is being delivered`,
  payload_quarantined: (s, n) => `${n} signed payload${n === 1 ? "" : "s"} from ${s} failed validation and ${n === 1 ? "was" : "were"} quarantined`,
  configuration_invalid: (s, n) =>
    s === "SOURCES"
      ? `SOURCES is invalid: the sources it declares answer 503 until it is fixed (found by ${n} cron run${n === 1 ? "" : "s"}; see /admin/sources)`
      : `${s} is invalid: nothing is delivered until it is fixed (found ${n} time${n === 1 ? "" : "s"}: once per event it holds, and once per cron run; see /healthz and the console)`,
  sweep_requeued: (_, n) => `the reconciliation sweep re-enqueued ${n} stranded event${n === 1 ? "" : "s"}`,
  dead_letters_received: (_, n) => `the dead-letter queue received ${n} message${n === 1 ? "" : "s"}`,
  transform_failed: (s, n) => `the transform of ${s} failed on ${n} event${n === 1 ? "" : "s"}; replay them (status transform_failed) once it is fixed`,
};

function render(config: AlertConfig, row: AlertRow): Record<string, unknown> {
  const kind = (ALERT_KINDS as readonly string[]).includes(row.kind) ? (row.kind as AlertKind) : null;
  const sentence = kind ? SENTENCES[kind](row.subject, row.pending) : `${row.kind} (${row.subject}) ×${row.pending}`;
  const firstAt = new Date(row.first_at ?? Date.now()).toISOString();
  const lastAt = new Date(row.last_at ?? Date.now()).toISOString();
  const page = kind === "configuration_invalid" && row.subject === "SOURCES" ? "/sources" : kind && CONSOLE_PAGES[kind];
  const link = config.consoleUrl && page ? `${config.consoleUrl}${page}` : null;
  if (config.format === "json") {
    return {
      kind: row.kind, subject: row.subject, destination: ABOUT_A_DESTINATION.has(row.kind) ? row.subject : null,
      count: row.pending, firstAt, lastAt, message: sentence, link,
    };
  }
  const when = row.pending === 1 ? `at ${firstAt}` : `between ${firstAt} and ${lastAt}`;
  return { text: `edgehook: ${sentence}, ${when}.${link ? ` <${link}|Open the console>` : ""}` };
}
