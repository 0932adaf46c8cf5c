/**
 * The alerts queue's consumer: sends each due alert to ALERT_URL, as Slack-compatible
 * `{"text": …}` (Slack, Teams and Mattermost incoming webhooks take it) or as structured JSON,
 * signed with Standard Webhooks when ALERT_SECRET is set. A target that is down only delays
 * alerts: the message is retried with backoff (its count grows meanwhile), failures are counted
 * in /admin/metrics, and deliveries never wait for any of it (they only note, alerts/notify.ts).
 */
import { standardWebhooksKey, isAllowedUrl } from "../deliver/destinations";
import { signStandardWebhook } from "../deliver/forward";
import type { AlertMessage, Env } from "../env";
import { MAX_QUEUE_DELAY_SECONDS, retrySecondsOverADay as retrySeconds } from "../queues";
import { bytesToHex } from "../crypto";
import { alertDeferred, alertFailed, alertIdle, alertSent, claimAlert, type AlertRow } from "../store/alerts";
import { CounterDeltas } from "../store/metrics";
import { ALERT_KINDS, alertTiming, schedule, type AlertKind } from "./notify";

/** Which queue's batches come to this consumer: recognised by configuration, like the dead-letter queue. */
export function alertsQueueName(env: Env): string {
  return env.ALERTS_QUEUE_NAME || "edgehook-alerts";
}
const SEND_TIMEOUT_MS = 5_000;

export const ALERT_FORMATS = ["slack", "json"] as const;

export interface AlertConfig {
  url: string;
  format: (typeof ALERT_FORMATS)[number];
  signingKey: Uint8Array | null;
  consoleUrl: string | null;
}

/** ALERT_* read and checked; errors name the setting and the rule, never its value. Null when alerts are off (no ALERT_URL). */
export function alertConfig(env: Env): { ok: true; config: AlertConfig | null } | { ok: false; errors: string[] } {
  if (!env.ALERT_URL) return { ok: true, config: null };
  const errors: string[] = [];
  if (!isAllowedUrl(env.ALERT_URL)) errors.push("ALERT_URL: must be https (or http to 127.0.0.1/localhost)");
  const format = env.ALERT_FORMAT ?? "slack";
  if (!(ALERT_FORMATS as readonly string[]).includes(format)) errors.push(`ALERT_FORMAT: must be one of ${ALERT_FORMATS.join(", ")}`);
  const signingKey = env.ALERT_SECRET ? standardWebhooksKey(env.ALERT_SECRET) : null;
  if (env.ALERT_SECRET && !signingKey) errors.push("ALERT_SECRET: must be whsec_<base64> (16+ bytes)");
  const consoleUrl = env.CONSOLE_URL ? env.CONSOLE_URL.replace(/\/+$/, "") : null;
  if (consoleUrl && !isAllowedUrl(consoleUrl)) errors.push("CONSOLE_URL: must be https (or http to 127.0.0.1/localhost)");
  if (!env.ALERTS_QUEUE) errors.push("ALERTS_QUEUE: the alerts queue binding is missing (wrangler.toml)");
  if (errors.length) return { ok: false, errors };
  return { ok: true, config: { url: env.ALERT_URL, format: format as AlertConfig["format"], signingKey, consoleUrl } };
}

export async function consumeAlerts(batch: MessageBatch<AlertMessage>, env: Env): Promise<void> {
  const checked = alertConfig(env);
  await Promise.all(
    batch.messages.map(async (message) => {
      const key = message.body?.alert;
      // Alerts turned off, or a message that names no alert: nothing to send, ever.
      if (!checked.ok || !checked.config || typeof key?.kind !== "string" || typeof key.subject !== "string") {
        if (!checked.ok) console.error(JSON.stringify({ queue: batch.queue, outcome: "alerts_misconfigured", errors: checked.errors }));
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
    // Early (a duplicate the cron sent): this message waits for the cooldown's end and carries it.
    await alertDeferred(env.DB, row, cooldownEnds);
    message.retry({ delaySeconds: Math.min(MAX_QUEUE_DELAY_SECONDS, Math.ceil((cooldownEnds - now) / 1000)) });
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
      : `${s} is invalid: ${n} event${n === 1 ? " waits" : "s wait"} for a fix (see /healthz and the console)`,
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
