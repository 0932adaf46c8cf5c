/**
 * The ALERT_* settings, read and checked in one place: the noting side (alerts/notify.ts), the
 * alerts queue's consumer (alerts/send.ts), /healthz and /admin/alerts all act on the same verdict.
 */
import { isAllowedUrl, standardWebhooksKey } from "../deliver/destinations";
import type { Env } from "../env";

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
