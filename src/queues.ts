/** What the queue producers and consumers share: how many messages go in one send, and when a message comes back. */
import type { EventsQueueMessage } from "./env";

/** Queues delay a message by at most 12 hours. */
export const MAX_QUEUE_DELAY_SECONDS = 43_200;

/**
 * A retry that waits out an outage (D1 refusing a record, an alert target down): 30 s, doubling
 * to at most 15 minutes. A queue's 100 retries this way span 86,430 s, just over 24 hours, and a
 * short outage is still over within a minute or two of its end.
 */
export function retrySecondsOverADay(attempts: number): number {
  return Math.min(15 * 60, 30 * 2 ** Math.max(0, attempts - 1));
}

/** Queue sendBatch takes at most 100 messages, and 256 KB in all, each message's metadata (about 100 bytes) counted. */
const SEND_BATCH = 100;
const SEND_BATCH_BYTES = 256_000;
const MESSAGE_METADATA_BYTES = 100;
const utf8 = new TextEncoder();

/** How far a sendAll got: the first `sent` messages went out; a caller that stops waiting sets `stopped`. */
export interface SendProgress {
  sent: number;
  stopped: boolean;
}

/**
 * Sends any number of messages, in order, as few sendBatch calls as Queues' limits on one allow.
 * If the caller stops waiting (`progress.stopped`), no further sendBatch starts; one already under
 * way may still go out after the caller has read `progress.sent`.
 */
export async function sendAll<T>(queue: Queue<T>, messages: MessageSendRequest<T>[], progress: SendProgress = { sent: 0, stopped: false }): Promise<void> {
  let chunk: MessageSendRequest<T>[] = [];
  let bytes = 0;
  const send = async () => {
    if (progress.stopped) throw new Error("sendAll: the caller stopped waiting");
    await queue.sendBatch(chunk);
    progress.sent += chunk.length;
    chunk = [];
    bytes = 0;
  };
  for (const message of messages) {
    const size = utf8.encode(JSON.stringify(message.body)).byteLength + MESSAGE_METADATA_BYTES;
    if (chunk.length === SEND_BATCH || (chunk.length > 0 && bytes + size > SEND_BATCH_BYTES)) await send();
    chunk.push(message);
    bytes += size;
  }
  if (chunk.length > 0) await send();
}

/** Enqueues stored events by key (a message that names an event delivers what D1 says is due). */
export function enqueueEvents(queue: Queue<EventsQueueMessage>, keys: string[]): Promise<void> {
  return sendAll(queue, keys.map((eventKey) => ({ body: { eventKey }, contentType: "json" as const })));
}
