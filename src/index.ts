import { app } from "./app";
import type { Env, QueuedEvent } from "./env";
import { consumeEvents } from "./deliver/consumer";

export default {
  fetch: app.fetch,
  queue: consumeEvents,
} satisfies ExportedHandler<Env, QueuedEvent>;
