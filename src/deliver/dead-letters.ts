/**
 * The dead-letter queue's consumer: records every message that arrives there in D1, so nothing
 * leaves the system unrecorded (a dead-letter queue nobody consumes deletes its messages when
 * their retention ends). An event message that used up the queue's retries before the consumer
 * stored its event still carries it: it is stored here, body and all, as an unfinished event.
 * Unfinished events in D1 are what the reconciliation sweep finds and enqueues again.
 */
import type { Env, EventsQueueMessage } from "../env";
import { retrySecondsOverADay } from "../queues";
import { notify } from "../alerts/notify";
import { recordDeadLetters, type DeadLetter } from "../store/dead-letters";
import { bodyWriter } from "../store/bodies";
import { writeAllOrEach } from "./all-or-each";
import { readableMessage } from "./consumer";

/** The dead-letter queue's name unless DEAD_LETTER_QUEUE_NAME says otherwise (as in wrangler.toml). */
export const DEFAULT_DEAD_LETTER_QUEUE_NAME = "edgehook-dead-letters";

/**
 * Which queue's batches come to this consumer: recognised by configuration, so an environment
 * that renames the queue (and sets the var) never sends its dead letters to the delivery consumer.
 */
export function deadLetterQueueName(env: Env): string {
  return env.DEAD_LETTER_QUEUE_NAME || DEFAULT_DEAD_LETTER_QUEUE_NAME;
}

/**
 * How long a letter D1 refused waits before its next try. This queue has no dead-letter queue of
 * its own, so once its max_retries (100, wrangler.toml) are used up the message, possibly the only
 * copy of an event, is gone: the retries span just over 24 hours of D1 outage (well inside the
 * queue's 4-day message retention).
 */
export const recordRetrySeconds = retrySecondsOverADay;

export async function consumeDeadLetters(batch: MessageBatch<EventsQueueMessage>, env: Env): Promise<void> {
  const receivedAt = Date.now();
  const letters: { message: Message<EventsQueueMessage>; letter: DeadLetter }[] = [];
  for (const message of batch.messages) {
    // A release of held deliveries that used up its retries is not a letter: the cron releases again.
    if (!readableMessage(message.body)) {
      console.error(JSON.stringify({ queue: batch.queue, messageId: message.id, outcome: "unreadable_message" }));
      message.ack();
      continue;
    }
    const { eventKey, event, destinations } = message.body;
    letters.push({
      message,
      letter: {
        messageId: message.id, eventKey, destinations: destinations ?? null, attempts: message.attempts, receivedAt,
        carried: event ? { event: { ...event, key: eventKey }, enqueuedAt: message.timestamp.getTime() } : null,
      },
    });
  }
  // One letter D1 refuses must not hold up the rest: they are then recorded one by one.
  const fresh = new Set<string>();
  const unrecorded = await writeAllOrEach(letters, async (some) => {
    for (const id of await recordDeadLetters(env.DB, bodyWriter(env), some.map(({ letter }) => letter))) fresh.add(id);
  }, (item, err) => {
    const outcome = item ? { eventKey: item.letter.eventKey, outcome: "dead_letter_record_failed" } : { outcome: "dead_letter_batch_failed" };
    console.error(JSON.stringify({ queue: batch.queue, ...outcome, error: String(err) }));
  });
  for (const item of letters) {
    if (unrecorded.has(item)) item.message.retry({ delaySeconds: recordRetrySeconds(item.message.attempts) });
    else item.message.ack();
  }
  // Our own notices of dead deliveries were alerted as delivery_dead already: only messages that
  // used up the queue's retries (possibly the only copy of an event) are news here, once each.
  const exhausted = letters.filter((item) => item.letter.destinations === null && fresh.has(item.message.id)).length;
  await notify(env, [{ kind: "dead_letters_received", subject: "dead-letter queue", count: exhausted }]);
  console.log(JSON.stringify({ queue: batch.queue, outcome: "dead_letters_recorded", count: letters.length, withEvent: letters.filter(({ letter }) => letter.carried).length }));
}
