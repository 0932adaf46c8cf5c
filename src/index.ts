import { app } from "./app";
import { consumeEvents } from "./deliver/consumer";
import { consumeDeadLetters, deadLetterQueueName } from "./deliver/dead-letters";
import { reconcile } from "./deliver/reconcile";
import { flushWhenDue } from "./receive/outcomes";
import { numberVar, searchEnabled, type Env, type QueuedEvent } from "./env";
import { purgeOlderThan } from "./store/retention";
import { followSearchSetting } from "./store/search";

const DEFAULT_RETENTION_DAYS = 30;

export default {
  fetch: app.fetch,
  async queue(batch, env, ctx) {
    await (batch.queue === deadLetterQueueName(env) ? consumeDeadLetters(batch, env) : consumeEvents(batch, env));
    // The consumer's telemetry failures are counted in this isolate like the request path's.
    flushWhenDue(env.DB, ctx, Date.now());
  },
  /**
   * The cron: the reconciliation sweep, the retention purge, then the search index follows SEARCH
   * (after the purge, so it never indexes events about to go); one failing never stops the others.
   */
  async scheduled(controller, env) {
    const now = controller.scheduledTime;
    const cutoff = now - numberVar(env.RETENTION_DAYS, DEFAULT_RETENTION_DAYS) * 86_400_000;
    const steps = {
      reconcile: () => reconcile(env, now),
      retention_purge: () => purgeOlderThan(env.DB, cutoff),
      search_index: () => followSearchSetting(env.DB, searchEnabled(env)),
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
} satisfies ExportedHandler<Env, QueuedEvent>;
