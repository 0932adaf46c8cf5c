/**
 * The reconciliation sweep (on the cron): finds events the delivery path has lost track of
 * and enqueues them again. Queue retries cannot do this alone: a message can be lost (a local
 * queue across a restart, a send that failed after a large body was written), acked while the
 * configuration was invalid, or used up its retries (the dead-letter consumer then stores the
 * event it carried, unfinished). An event not yet stored lives only in the queue: its own
 * retries and the dead-letter consumer are what keep it.
 */
import { notify } from "../alerts/notify";
import { numberVar, type Env } from "../env";
import { enqueueEvents } from "../queues";
import { findStranded, markProgress } from "../store/events";
import { loadDestinations } from "./destinations";

const DEFAULT_RECONCILE_AFTER_SECONDS = 900;
/** Events one sweep re-enqueues at most; the next run continues (oldest first). */
const SWEEP_LIMIT = 4_000;

export async function reconcile(env: Env, now: number): Promise<{ requeued: number; skipped?: string }> {
  // Nothing could be delivered: the consumer would only hold them again, and every window would
  // send (and alert) the same events once more. The sweeps after the fix take them (idle ones, oldest first).
  if (!loadDestinations(env).ok) return { requeued: 0, skipped: "DESTINATIONS is invalid" };
  const idleMs = numberVar(env.RECONCILE_AFTER_SECONDS, DEFAULT_RECONCILE_AFTER_SECONDS) * 1000;
  const keys = await findStranded(env.DB, now - idleMs, now, SWEEP_LIMIT, env.LANES !== undefined);
  // Marked before the sends, in one statement: a failed send waits one more window, a sent one is
  // never sent twice by the next sweep. One select, one update and 40 sends stay inside the free
  // plan's 50 subrequests per invocation.
  if (keys.length) await markProgress(env.DB, keys, now);
  await enqueueEvents(env.EVENTS_QUEUE, keys);
  await notify(env, [{ kind: "sweep_requeued", subject: "sweep", count: keys.length }], now);
  return { requeued: keys.length };
}
