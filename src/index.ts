import { app } from "./app";
import { consumeEvents } from "./deliver/consumer";
import { consumeDeadLetters, deadLetterQueueName } from "./deliver/dead-letters";
import { alertsQueueName, consumeAlerts } from "./alerts/send";
import { notify, rescheduleLostAlerts } from "./alerts/notify";
import { tendDestinations } from "./deliver/controls";
import { wakeLanes } from "./deliver/lane-wake";
import { loadDestinations } from "./deliver/destinations";
import { reconcile } from "./deliver/reconcile";
import { flushWhenDue } from "./receive/outcomes";
import { numberVar, searchEnabled, type AlertMessage, type Env, type EventsQueueMessage } from "./env";
import { loadSources } from "./sources";
import { purgeAuditLog, purgeOlderThan } from "./store/retention";
import { followSearchSetting } from "./store/search";
import { moveBodiesToR2 } from "./store/bodies";

const DEFAULT_RETENTION_DAYS = 30;
const DAY_MS = 86_400_000;

export { DestinationRateLimiter } from "./deliver/rate-limiter";
export { DestinationLane } from "./deliver/lane";

export default {
  fetch: app.fetch,
  async queue(batch, env, ctx) {
    if (batch.queue === deadLetterQueueName(env)) await consumeDeadLetters(batch, env);
    else if (batch.queue === alertsQueueName(env)) await consumeAlerts(batch as MessageBatch<unknown> as MessageBatch<AlertMessage>, env);
    else await consumeEvents(batch, env);
    // The consumer's telemetry failures are counted in this isolate like the request path's.
    flushWhenDue(env.DB, ctx, Date.now());
  },
  /**
   * The cron: the destinations' safety net (an overdue circuit probe, held deliveries of an active
   * destination or of a removed one: before the sweep, which then settles those events), every
   * lane with unfinished deliveries woken (a lost wake-up), the reconciliation sweep, the retention
   * purge (rows, then their R2 bodies; the audit log on its own clock), bodies stored in D1 before
   * bodies moved to R2 moved there, the search index follows SEARCH (after the purge, so it never indexes events about to
   * go), and alerts: an invalid DESTINATIONS or SOURCES is noted, and alerts whose send was lost
   * (or never scheduled) are scheduled again.
   * One failing never stops the others.
   */
  async scheduled(controller, env) {
    const now = controller.scheduledTime;
    const retentionDays = numberVar(env.RETENTION_DAYS, DEFAULT_RETENTION_DAYS);
    const cutoff = now - retentionDays * DAY_MS;
    const auditCutoff = now - numberVar(env.AUDIT_RETENTION_DAYS, retentionDays) * DAY_MS;
    const steps = {
      destinations: async () => {
        const config = loadDestinations(env);
        return config.ok ? tendDestinations(env, config.destinations, now) : { skipped: "DESTINATIONS is invalid" };
      },
      lanes: () => wakeLanes(env),
      reconcile: () => reconcile(env, now),
      retention_purge: () => purgeOlderThan(env.DB, env.BODIES, cutoff, { now }),
      // Bodies stored in D1 before they moved to R2, a bounded batch a run.
      body_move: () => moveBodiesToR2(env.DB, env.BODIES),
      // A step of its own: one failing never stops the other.
      audit_purge: async () => ({ auditRecords: await purgeAuditLog(env.DB, auditCutoff) }),
      search_index: () => followSearchSetting(env.DB, env.BODIES, searchEnabled(env)),
      alerts: async () => {
        // An invalid SOURCES shows in no batch (its sources answer 503), nor does an invalid
        // DESTINATIONS while no event arrives: the cron notes each, once a run.
        const invalid = [
          ...(loadDestinations(env).ok ? [] : ["DESTINATIONS"]),
          ...(loadSources(env).ok ? [] : ["SOURCES"]),
        ];
        await notify(env, invalid.map((subject) => ({ kind: "configuration_invalid", subject, count: 1 })), now);
        return { ...(await rescheduleLostAlerts(env, now)), invalidConfiguration: invalid };
      },
    };
    let failed = false;
    for (const [outcome, step] of Object.entries(steps)) {
      try {
        console.log(JSON.stringify({ cron: controller.cron, outcome, ...(await step()) }));
      } catch (err) {
        failed = true;
        console.error(JSON.stringify({ cron: controller.cron, outcome: `${outcome}_failed`, error: String(err) }));
      }
    }
    // A failed step shows as a failed cron run in the dashboard, after the others had their turn.
    if (failed) throw new Error("a scheduled step failed; see the log lines above");
  },
} satisfies ExportedHandler<Env, EventsQueueMessage>;
