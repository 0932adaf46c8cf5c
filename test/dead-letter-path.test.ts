/**
 * The dead-letter path keeps its word: its consumer retries a record D1 refuses for about a day
 * (not 50 minutes), the dead-letter queue is recognised by configuration rather than by a
 * literal name, and events held while DESTINATIONS is invalid are written message by message
 * when the batch's write fails.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { consumeDeadLetters, recordRetrySeconds } from "../src/deliver/dead-letters";
import type { Env, QueuedEvent } from "../src/env";
import { sendDeadLetters } from "../src/deliver/follow-up";
import type { Round } from "../src/store/deliveries";
import { accept, consume, events, useDeliveryHarness } from "./delivery-harness";
import { faultyD1 } from "./faults";
import { countRows, zuddlBody, zuddlRequest } from "./helpers";

useDeliveryHarness();

/** The dead-letter consumer's max_retries in wrangler.toml. */
async function deadLetterMaxRetries(): Promise<number> {
  const { default: config } = await import("../wrangler.toml?raw");
  const section = config.split("[[queues.consumers]]").find((s: string) => /^\s*queue = "edgehook-dead-letters"/.test(s))!;
  return Number(/max_retries = (\d+)/.exec(section)![1]);
}

const downD1 = () =>
  faultyD1(env.DB, () => {
    throw new Error("injected: D1 is down");
  });

describe("the dead-letter consumer's retries", () => {
  it("cover at least 24 hours of D1 outage across max_retries, each delay within the Queues limit", async () => {
    const retries = await deadLetterMaxRetries();
    const delays = Array.from({ length: retries }, (_, i) => recordRetrySeconds(i + 1));
    expect(delays.every((d) => d >= 1 && d <= 43_200)).toBe(true);
    expect(delays.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(24 * 3600);
    // Increasing: a short outage is recorded soon after it ends.
    expect(delays[0]).toBeLessThanOrEqual(60);
  });

  it("a letter D1 refuses comes back later the more often it was refused", async () => {
    const key = await accept(await zuddlRequest(zuddlBody()));
    const delayAt = async (attempts: number) => {
      const delays: (number | undefined)[] = [];
      const message = {
        id: `letter-${attempts}`, timestamp: new Date(), attempts, body: { eventKey: key, destinations: ["alpha"] },
        ack: () => undefined, retry: (options?: QueueRetryOptions) => void delays.push(options?.delaySeconds),
      } as unknown as Message<QueuedEvent>;
      await consumeDeadLetters({ queue: "edgehook-dead-letters", messages: [message] } as unknown as MessageBatch<QueuedEvent>, { ...env, DB: downD1() });
      return delays[0]!;
    };
    const [first, fiftieth] = [await delayAt(1), await delayAt(50)];
    expect(first).toBe(recordRetrySeconds(1));
    expect(fiftieth).toBe(recordRetrySeconds(50));
    expect(fiftieth).toBeGreaterThan(first);
  });
});

describe("the dead-letter queue's name", () => {
  it("comes from DEAD_LETTER_QUEUE_NAME: a renamed queue's letters are recorded, not delivered", async () => {
    const key = await accept(await zuddlRequest(zuddlBody()));
    const result = await consume([{ eventKey: key, destinations: ["alpha"] }], { DEAD_LETTER_QUEUE_NAME: "staging-dead-letters" }, {
      queue: "staging-dead-letters", ids: ["renamed-letter"],
    });
    expect(result.acked).toEqual(["renamed-letter"]);
    expect(await countRows("SELECT count(*) AS n FROM dead_letters WHERE message_id = 'renamed-letter' AND event_key = ?", key)).toBe(1);
  });
});

describe("events held while DESTINATIONS is invalid", () => {
  it("are written message by message when the batch's write fails, so one D1 error costs no message a retry", async () => {
    const invalid = [{ name: "bad", url: "https://x.test", filter: "$.data[?(" }];
    const keys = [await accept(await zuddlRequest(zuddlBody())), await accept(await zuddlRequest(zuddlBody()))];
    let refused = 0;
    const flaky = faultyD1(env.DB, (sql) => {
      if (sql.includes("SET last_error") && refused++ === 0) throw new Error("injected: one batch-level D1 error");
    });
    const result = await consume(events.accepted, { DESTINATIONS: invalid, DB: flaky });
    expect(result.retried).toEqual([]);
    expect(result.acked.sort()).toEqual(["msg-0", "msg-1"]);
    for (const key of keys) {
      expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ? AND last_error LIKE 'DESTINATIONS is invalid%'", key)).toBe(1);
    }
  });
});

describe("a batch's dead-letter notices", () => {
  /**
   * Queues as deployed: a sendBatch over 100 messages or 256 KB is refused (the local one does not
   * check); `refuseCall` fails that call, `stallFirstMs` holds the first call that long.
   */
  function limitedQueue({ refuseCall, stallFirstMs }: { refuseCall?: number; stallFirstMs?: number } = {}) {
    const calls: number[] = [];
    const sent: unknown[] = [];
    const queue = {
      async sendBatch(messages: Iterable<MessageSendRequest<unknown>>) {
        const list = [...messages];
        if (stallFirstMs && calls.length === 0) await new Promise((resolve) => setTimeout(resolve, stallFirstMs));
        const bytes = list.reduce((sum, m) => sum + new TextEncoder().encode(JSON.stringify(m.body)).byteLength + 100, 0);
        if (list.length > 100 || bytes > 256_000) throw new Error(`sendBatch refused: ${list.length} messages, ${bytes} bytes`);
        if (calls.length + 1 === refuseCall) throw new Error("injected: the queue refuses this send");
        calls.push(list.length);
        sent.push(...list.map((m) => m.body));
      },
    } as unknown as Queue<unknown>;
    return { queue, calls, sent };
  }
  // 100 rounds, each with 40 destinations (64-character names) dead at once: about 280 KB of notices.
  const destinations = Array.from({ length: 40 }, (_, i) => `${"d".repeat(62)}${String(i).padStart(2, "0")}`);
  const rounds = () => Array.from({ length: 100 }, (_, i) => ({ eventKey: `evt_${i}`, deadLettered: [...destinations], gaveUp: true }) as unknown as Round);

  it("notices more than one send takes go in several sends, each within Queues' limits, all in order, and every round stays marked as noticed", async () => {
    const queue = limitedQueue();
    const batch = rounds();
    await sendDeadLetters({ ...env, DEAD_LETTER_QUEUE: queue.queue } as Env, batch);
    expect(queue.sent).toEqual(batch.map((round) => ({ eventKey: round.eventKey, destinations })));
    expect(queue.calls.length).toBeGreaterThan(1);
    expect(batch.every((round) => round.deadLettered.length === 40)).toBe(true);
  });

  it("a send that fails part way: the rounds already sent stay marked, the rest are left unmarked (noticed again later)", async () => {
    const queue = limitedQueue({ refuseCall: 2 });
    const batch = rounds();
    await sendDeadLetters({ ...env, DEAD_LETTER_QUEUE: queue.queue } as Env, batch);
    const sent = queue.calls[0]!;
    expect(sent).toBeGreaterThan(0);
    expect(batch.slice(0, sent).every((round) => round.deadLettered.length === 40)).toBe(true);
    expect(batch.slice(sent).every((round) => round.deadLettered.length === 0)).toBe(true);
  });

  it("past the 5 s deadline no further send starts: the one under way may land, but the rest of the notices wait, unmarked, for a later round", async () => {
    const queue = limitedQueue({ stallFirstMs: 6_000 });
    const batch = rounds();
    await sendDeadLetters({ ...env, DEAD_LETTER_QUEUE: queue.queue } as Env, batch);
    expect(batch.every((round) => round.deadLettered.length === 0)).toBe(true);
    // The stalled send lands after the deadline; nothing is sent after it.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(queue.calls).toHaveLength(1);
    expect(queue.sent).toHaveLength(queue.calls[0]!);
  }, 15_000);
});
