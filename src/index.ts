import { app } from "./app";
import { consumeEvents } from "./deliver/consumer";
import { numberVar, type Env, type QueuedEvent } from "./env";
import { purgeOlderThan } from "./store/retention";

const DEFAULT_RETENTION_DAYS = 30;

export default {
  fetch: app.fetch,
  queue: consumeEvents,
  async scheduled(controller, env) {
    const cutoff = controller.scheduledTime - numberVar(env.RETENTION_DAYS, DEFAULT_RETENTION_DAYS) * 86_400_000;
    const purged = await purgeOlderThan(env.DB, cutoff);
    console.log(JSON.stringify({ cron: controller.cron, outcome: "retention_purge", ...purged }));
  },
} satisfies ExportedHandler<Env, QueuedEvent>;
