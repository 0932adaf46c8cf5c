import type { Env, QueuedEvent } from "../env";
import { markEnqueued } from "../store/events";

/** Delivery path entry: consume → route → forward → record. */
export async function consumeEvents(batch: MessageBatch<QueuedEvent>, env: Env): Promise<void> {
  for (const message of batch.messages) {
    await markEnqueued(env.DB, message.body.eventKey, message.timestamp.getTime());
    message.ack();
  }
}
