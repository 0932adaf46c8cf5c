/**
 * The dead-letter queue's consumer: records every message that arrives there in D1, so nothing
 * leaves the system unrecorded (a dead-letter queue nobody consumes deletes its messages when
 * their retention ends). Event messages that used up the queue's retries stay unfinished in D1,
 * where the reconciliation sweep finds them again.
 */
import type { Env, QueuedEvent } from "../env";
import { recordDeadLetters } from "../store/dead-letters";

/** The dead-letter queue's name in wrangler.toml; its batches come to this consumer. */
export const DEAD_LETTER_QUEUE_NAME = "edgehook-dead-letters";

export async function consumeDeadLetters(batch: MessageBatch<QueuedEvent>, env: Env): Promise<void> {
  const receivedAt = Date.now();
  const letters = batch.messages
    .filter((message) => typeof message.body?.eventKey === "string")
    .map((message) => ({
      messageId: message.id,
      eventKey: message.body.eventKey,
      destinations: message.body.destinations ?? null,
      attempts: message.attempts,
      receivedAt,
    }));
  try {
    await recordDeadLetters(env.DB, letters);
  } catch (err) {
    console.error(JSON.stringify({ queue: batch.queue, outcome: "dead_letter_record_failed", error: String(err) }));
    batch.retryAll({ delaySeconds: 30 });
    return;
  }
  console.log(JSON.stringify({ queue: batch.queue, outcome: "dead_letters_recorded", count: letters.length, unreadable: batch.messages.length - letters.length }));
  batch.ackAll();
}
