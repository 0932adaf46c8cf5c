import { app } from "./app";
import { consumeEvents } from "./deliver/consumer";
import { consumeDeadLetters, DEAD_LETTER_QUEUE_NAME } from "./deliver/dead-letters";
import { ALERTS_QUEUE_NAME, consumeAlerts } from "./alerts/send";
import { rescheduleLostAlerts } from "./alerts/notify";
import { tendDestinations } from "./deliver/controls";
import { loadDestinations } from "./deliver/destinations";
import { reconcile } from "./deliver/reconcile";
import { numberVar, searchEnabled, type AlertMessage, type Env, type EventsQueueMessage } from "./env";
import { purgeOlderThan } from "./store/retention";
import { followSearchSetting } from "./store/search";

const DEFAULT_RETENTION_DAYS = 30;

export { DestinationRateLimiter } from "./deliver/rate-limiter";

export default {
  fetch: app.fetch,
  queue(batch, env) {
    if (batch.queue === DEAD_LETTER_QUEUE_NAME) return consumeDeadLetters(batch, env);
    if (batch.queue === ALERTS_QUEUE_NAME) return consumeAlerts(batch as MessageBatch<unknown> as MessageBatch<AlertMessage>, env);
    return consumeEvents(batch, env);
  },
  /**
   * The cron: the destinations' safety net (an overdue circuit probe, held deliveries of an active
   * destination or of a removed one: before the sweep, which then settles those events), the
   * reconciliation sweep, the retention purge, the search index follows SEARCH (after the purge,
   * so it never indexes events about to go), and alerts whose send was lost are scheduled again.
   * One failing never stops the others.
   */
  async scheduled(controller, env) {
    const now = controller.scheduledTime;
    const cutoff = now - numberVar(env.RETENTION_DAYS, DEFAULT_RETENTION_DAYS) * 86_400_000;
    const steps = {
      destinations: async () => {
        const config = loadDestinations(env);
        return config.ok ? tendDestinations(env, config.destinations, now) : { skipped: "DESTINATIONS is invalid" };
      },
      reconcile: () => reconcile(env, now),
      retention_purge: () => purgeOlderThan(env.DB, cutoff),
      search_index: () => followSearchSetting(env.DB, searchEnabled(env)),
      alerts: () => rescheduleLostAlerts(env, now),
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
