/**
 * The delivery path's batch loop: store → claim → plan → forward → record → ack or retry each
 * message. The request path's message carries the event itself; the consumer stores it, then
 * sends it to every destination that wants it and has not had it yet, and acks the message only
 * when nothing is left to do for it. Destinations that succeeded are never sent to again by a
 * redelivered message. Each step has its module: plan.ts (what is due where), round.ts (a
 * message's forwards and its decision), attempt.ts (one forward), retry.ts (backoff),
 * follow-up.ts (probes, releases, alerts, dead-letter notices), lane.ts (troubled destinations).
 *
 * Exactly one owner per event: copies of one provider event (the provider's redeliveries, a
 * retry after a 503) arrive as separate messages. The message whose insert created the row owns
 * delivery, and its own retries recognise themselves by message id; every other copy is acked
 * as a duplicate without forwarding anything. Messages that name a stored event (the sweep, a
 * replay, a body too large for a message) deliver what D1 says is due. Either way one message
 * at a time holds the event's delivery lease, so two messages never forward an event at once.
 *
 * Storage is per batch, not per message: one D1 batch before forwarding (store, lease, read), one
 * that writes the routed deliveries as pending (and hands troubled destinations' to their lanes),
 * and one after (record); D1 runs one query at a time, so transactions per event bound the rate.
 *
 * One message never affects another: a message that cannot be read is logged and acked, a
 * store or a record that fails for the batch is retried message by message (so only the message
 * that cannot be written comes back, with its body), and anything thrown while delivering a
 * message is recorded on its event and retries that message alone.
 *
 * A batch never waits long on one destination: a destination whose forward runs past the lane
 * budget gets a lane of its own (lane.ts), and the batch's forwards to it that have not started
 * go there. Operator controls act per round (plan.ts): paused or open destinations have their
 * deliveries held, a probe message tries one delivery through an open circuit, and a
 * rate-limited destination's forwards start at times its Durable Object reserves.
 */
import type { Env, EventsQueueMessage, QueuedEvent, ReleaseHeld } from "../env";
import { isRecord } from "../providers/provider";
import { getControls, stateOf, type ControlRow } from "../store/controls";
import {
  claimForDelivery, FINISHED, holdForConfiguration, leaseHolders, recordRounds, recordRouted, type Claim, type ClaimResult, type Routed,
} from "../store/deliveries";
import { LEASE_NONCE_CHARS } from "../store/events";
import { BODY_READ_BUDGET_BYTES, bodyWriter, readBodies, type BodyWriter } from "../store/bodies";
import { bytesToHex } from "../crypto";
import { notify } from "../alerts/notify";
import { writeAllOrEach } from "./all-or-each";
import { currentProbe, releaseChunk } from "./controls";
import { loadDestinations } from "./destinations";
import { alertNotes, followCircuits, sendDeadLetters } from "./follow-up";
import { pokeLanes } from "./lane-wake";
import { limiter } from "./limiter";
import { draftRound, maxForwardsPerInvocation, reserveRates, type Draft, type ForwardBudget } from "./plan";
import { retryPolicy, backoffSeconds } from "./retry";
import { failedRound, runRound, type Plan } from "./round";
import { transformRunner } from "./transform";

/** Workers allow 6 simultaneous open connections per invocation; more would queue inside fetch() and time out there. */
const MAX_OPEN_FORWARDS = 6;


/**
 * How long after a batch starts its forwards may still start. A queue consumer may run 15 minutes;
 * 1,000 forwards through 6 connections to receivers that hang until their timeout (up to 30 s)
 * would take far longer, and a batch cut off records nothing. Forwards not started by then wait
 * for their message's next delivery (no attempt used), so a batch ends within this plus one timeout
 * (and a transform's turn and run, bounded by TRANSFORM_TIMEOUT_MS each).
 */
const START_WINDOW_MS = 5 * 60_000;

/** A release that failed (D1) tries again this much later. */
const RELEASE_RETRY_SECONDS = 5;

/**
 * How long a message may hold an event's delivery lease: a queue consumer's wall-clock limit
 * (15 minutes), so a lease never lapses under a round that is still running. A holder's own
 * retry takes it back at once; only a message lost while holding it makes others wait this long.
 */
export const LEASE_MS = 15 * 60_000;

/** Kept on the event while DESTINATIONS is invalid; the reconciliation sweep re-enqueues it once fixed. */
export const WAITING_FOR_CONFIGURATION = "DESTINATIONS is invalid; the event waits and is re-enqueued by the reconciliation sweep once it is fixed";

const isDraft = (value: Plan | Draft): value is Draft => "message" in value;

export async function consumeEvents(batch: MessageBatch<EventsQueueMessage>, env: Env): Promise<void> {
  const retry = retryPolicy(env);
  const messages: Message<QueuedEvent>[] = [];
  const releases: Message<ReleaseHeld>[] = [];
  for (const message of batch.messages) {
    if (isEventMessage(message)) messages.push(message);
    else if (isReleaseMessage(message)) releases.push(message);
    else {
      // Only our own code sends here, so this is a bug; a retry could never read it either.
      console.error(JSON.stringify({ queue: batch.queue, messageId: message.id, outcome: "unreadable_message" }));
      message.ack();
    }
  }
  if (releases.length) await releaseEach(env, releases);
  if (messages.length === 0) return;
  const claims = messages.map(claimOf);
  const leases = new Map(claims.map((claim) => [claim.messageId, claim.lease]));
  const retryLater = (message: Message<QueuedEvent>) => message.retry({ delaySeconds: backoffSeconds(message.attempts, retry) });

  const config = loadDestinations(env);
  if (!config.ok) {
    // Waiting for a fix must not use up queue retries: store what the messages carry, say why on
    // the events, ack, and let the sweep re-enqueue them (they stay unfinished in D1).
    console.error(JSON.stringify({ queue: batch.queue, outcome: "invalid_destinations", errors: config.errors, events: claims.length }));
    // The alert counts events: a copy, or a message naming an event that waits already, adds none.
    const newlyHeld = new Set<string>();
    const hold = async (some: Message<QueuedEvent>[]) => {
      for (const key of await holdForConfiguration(env.DB, bodyWriter(env), some.map(claimOf), WAITING_FOR_CONFIGURATION)) newlyHeld.add(key);
    };
    // In one go, else message by message: one D1 error costs a retry only to what it refused.
    const unheld = await writeAllOrEach(messages, hold, (message, err) => {
      console.error(JSON.stringify({ queue: batch.queue, messageId: message?.id, outcome: message ? "hold_failed" : "hold_batch_failed", error: String(err) }));
    });
    for (const message of messages) (unheld.has(message) ? retryLater(message) : message.ack());
    await notify(env, [{ kind: "configuration_invalid", subject: "DESTINATIONS", count: newlyHeld.size }]);
    return;
  }

  const now = Date.now();
  // Per message id: its event and lease, null (a copy, or gone), or absent (could not be stored).
  const { claimed, controls } = await claimEach(env.DB, bodyWriter(env), claims, now);
  // A message that names a stored event (sweep, replay, large body) gets its body from R2, if this round holds its lease.
  const named = messages.flatMap((message) => {
    const stored = message.body.event ? null : claimed.get(message.id);
    return stored && stored.event.lease_by === leases.get(message.id) ? [stored.event] : [];
  });
  // Past what one batch reads, a message comes back a second later (a queue retry, no delivery attempt used).
  const bodies = await readBodies(env.BODIES, named, BODY_READ_BUDGET_BYTES);
  const budget: ForwardBudget = {
    connections: limiter(MAX_OPEN_FORWARDS),
    remaining: maxForwardsPerInvocation(env),
    metrics: env.METRICS,
    startBy: now + START_WINDOW_MS,
    transform: transformRunner(env),
    overBudget: new Set(),
    lanes: env.LANES !== undefined,
  };
  // Every message's round is planned first, so a rate-limited destination is asked once per batch.
  const drafts = messages.map((message): Plan | Draft => {
    const backoff = backoffSeconds(message.attempts, retry);
    // Not stored (or its lease not known): it comes back with its body, and nothing was forwarded.
    if (!claimed.has(message.id)) return { decision: { ack: false, delaySeconds: backoff }, round: null, outcome: "not_stored" };
    const stored = claimed.get(message.id);
    if (!stored) {
      // A copy: an earlier copy's insert created the row and owns delivery (or the provider event
      // is stored under the key it had before keys were derived). Or a stored event that is gone.
      if (!message.body.event) console.log(JSON.stringify({ queue: batch.queue, eventKey: message.body.eventKey, outcome: "event_not_found" }));
      return { decision: { ack: true }, round: null, outcome: message.body.event ? "duplicate" : "event_not_found" };
    }
    const { event } = stored;
    const lease = leases.get(message.id)!;
    if (event.lease_by !== lease) {
      // Another message is delivering it now: come back once that round is likely done.
      const leftSeconds = Math.ceil(((event.lease_until ?? now) - now) / 1000);
      return { decision: { ack: false, delaySeconds: Math.max(1, Math.min(leftSeconds, backoff)) }, round: null, outcome: "busy" };
    }
    // Its body past what this batch reads: the message comes back for it (its retry takes its lease back).
    if (bodies.deferred.has(event.key)) return { decision: { ack: false, delaySeconds: 1 }, round: null, outcome: "body_deferred" };
    const unreadable = bodies.failed.get(event.key);
    // R2 failing to answer is a passing fault, not the event's: no round is counted against it, as when D1 fails.
    if (unreadable && !unreadable.missing) {
      console.error(JSON.stringify({ queue: batch.queue, eventKey: event.key, messageId: message.id, outcome: "body_unavailable", error: unreadable.reason }));
      return { decision: { ack: false, delaySeconds: backoff }, round: null, outcome: "body_unavailable" };
    }
    try {
      // No such object: a failed round, so an event whose body is gone for good ends dead, after its rounds, not retried for ever.
      if (unreadable) throw unreadable;
      return draftRound(message, lease, stored, config.destinations, controls, budget, now);
    } catch (err) {
      return failedRound(stored, lease, message, err, backoff, currentProbe(message.body, controls), now);
    }
  });
  await reserveRates(env, drafts.filter(isDraft), now);
  const { woken, unwritten } = await handOver(env, drafts.filter(isDraft), now);
  const plans = await Promise.all(
    drafts.map(async (draft) => {
      if (!isDraft(draft)) return draft;
      try {
        return await runRound(draft, retry, budget, now);
      } catch (err) {
        const stored = { event: draft.event, deliveries: [...draft.previous.values()] };
        return failedRound(stored, draft.lease, draft.message, err, backoffSeconds(draft.message.attempts, retry), draft.probe, now);
      }
    }),
  );
  await sendDeadLetters(env, plans.flatMap((plan) => (plan.round ? [plan.round] : [])));
  const { unrecorded, changed } = await record(env.DB, plans, now, unwritten, budget.lanes);
  let acked = 0;
  plans.forEach((plan, i) => {
    const message = messages[i]!;
    if (unrecorded.has(plan)) retryLater(message);
    else if (plan.decision.ack) {
      message.ack();
      acked++;
    } else message.retry({ delaySeconds: plan.decision.delaySeconds });
  });
  const recorded = plans.filter((plan) => plan.round && !unrecorded.has(plan)).map((plan) => plan.round!);
  // Lanes not woken yet: deliveries moved aside while the batch ran (their destination went past the lane budget).
  await pokeLanes(env, recorded.flatMap((round) => round.laned).filter((name) => !woken.has(name)));
  await followCircuits(env, config.destinations, controls, changed, recorded, now);
  // Noted at the time of noting: a batch's forwards can take minutes, and the group wait runs from now.
  await notify(env, alertNotes(controls, changed, recorded, now));
  // One line per batch; a line per event only where a forward failed or a delivery was cancelled or skipped.
  // Deliveries newly held (their destination paused or open) are counted here per destination: a line per event
  // for each would cost the consumer as much CPU as the forwards it still makes to everyone else.
  const outcomes: Record<string, number> = {};
  for (const plan of plans) outcomes[plan.outcome] = (outcomes[plan.outcome] ?? 0) + 1;
  const held: Record<string, number> = {};
  // Newly held: a failed probe round's delivery was held already (and that round logs its error).
  for (const round of recorded) {
    for (const change of round.closed) if (change.status === "held" && change.destination !== round.probe) held[change.destination] = (held[change.destination] ?? 0) + 1;
  }
  console.log(JSON.stringify({
    queue: batch.queue, outcome: "batch", messages: batch.messages.length, ...outcomes, acked, unrecorded: unrecorded.size, ...(Object.keys(held).length && { held }),
  }));
}

/** A message the consumers can act on: names an event, and if it carries one, it has a body. */
export function readableMessage(body: unknown): body is QueuedEvent {
  if (!isRecord(body) || typeof body.eventKey !== "string") return false;
  return body.event === undefined || (isRecord(body.event) && typeof body.event.body === "string");
}

const isEventMessage = (message: Message<EventsQueueMessage>): message is Message<QueuedEvent> => readableMessage(message.body);

const isReleaseMessage = (message: Message<EventsQueueMessage>): message is Message<ReleaseHeld> =>
  isRecord(message.body) && typeof (message.body as Partial<ReleaseHeld>).release === "string";

function claimOf(message: Message<QueuedEvent>): Claim {
  const { eventKey, event } = message.body;
  const nonce = bytesToHex(crypto.getRandomValues(new Uint8Array(LEASE_NONCE_CHARS / 2)));
  return {
    messageId: message.id,
    // This delivery of this message, told apart from a copy of it running at once (see insertEvents).
    lease: `${message.id}|${message.attempts}|${nonce}`,
    eventKey,
    ...(event && { arrival: { event: { ...event, key: eventKey }, enqueuedAt: message.timestamp.getTime() } }),
  };
}

/**
 * Stores and leases the whole batch in one D1 batch (the bodies written to R2 first); if that
 * fails, message by message, so one message that cannot be stored costs only itself a retry
 * (with its body: nothing is lost).
 * A message missing from the result was not stored.
 */
async function claimEach(db: D1Database, bodies: BodyWriter, claims: Claim[], now: number): Promise<ClaimResult> {
  try {
    return await claimForDelivery(db, bodies, claims, now, now + LEASE_MS);
  } catch (err) {
    console.error(JSON.stringify({ queue: "deliver", outcome: "claim_batch_failed", error: String(err) }));
  }
  // Destination states come with any claim that succeeds; a message with no claim forwards nothing.
  const result: ClaimResult = { claimed: new Map(), controls: new Map() };
  for (const claim of claims) {
    try {
      const one = await claimForDelivery(db, bodies, [claim], now, now + LEASE_MS);
      for (const [messageId, value] of one.claimed) result.claimed.set(messageId, value);
      result.controls = one.controls;
    } catch (err) {
      console.error(JSON.stringify({ queue: "deliver", eventKey: claim.eventKey, messageId: claim.messageId, outcome: "claim_failed", error: String(err) }));
    }
  }
  return result;
}

/**
 * Writes the batch's rounds in one D1 batch; if that fails, message by message, so one
 * unwritable round costs only its own message a retry. Returns the plans not recorded, and the
 * destination states the recorded attempts changed.
 */
async function record(db: D1Database, plans: Plan[], now: number, unwritten: Routed[], lanes: boolean): Promise<{ unrecorded: Set<Plan>; changed: ControlRow[] }> {
  const pending = plans.filter((plan) => plan.round);
  const changed: ControlRow[] = [];
  // Routed deliveries the hand-over could not write are written with their rounds, before the events' status is derived.
  const routedOf = (some: Plan[]) => unwritten.filter((r) => some.some((plan) => plan.round!.eventKey === r.eventKey));
  const unrecorded = await writeAllOrEach(
    pending,
    async (some) => changed.push(...(await recordRounds(db, some.map((plan) => plan.round!), now, { routed: routedOf(some), lanes }))),
    (plan, err) => {
      const outcome = plan ? { eventKey: plan.round!.eventKey, outcome: "record_failed" } : { outcome: "record_batch_failed" };
      console.error(JSON.stringify({ queue: "deliver", ...outcome, error: String(err) }));
    },
    // A batch that committed but lost its answer released its rounds' leases: rewriting them would count their counters twice.
    async (some) => {
      const holders = await leaseHolders(db, some.map((plan) => plan.round!.eventKey));
      return new Set(some.filter((plan) => holders.get(plan.round!.eventKey) !== plan.round!.lease));
    },
  );
  return { unrecorded, changed };
}

/**
 * Before the batch forwards anything: its routed deliveries are written as pending (an event's
 * page shows them from now on) and those of destinations in a lane of their own are handed to
 * their lane, which is woken. If this write fails, the rounds' record writes them instead.
 */
async function handOver(env: Env, drafts: Draft[], now: number): Promise<{ woken: Set<string>; unwritten: Routed[] }> {
  const routed: Routed[] = drafts.flatMap((draft) => {
    const closed = new Set(draft.closed.map((c) => c.destination));
    return draft.targets
      .filter((d) => !closed.has(d.name) && !FINISHED.has(draft.previous.get(d.name)?.status ?? "pending"))
      .map((d) => ({ eventKey: draft.event.key, destination: d.name, generation: draft.previous.get(d.name)?.generation ?? 0, lane: draft.laned.includes(d.name) }));
  });
  let unwritten: Routed[] = [];
  try {
    await recordRouted(env.DB, routed, now);
  } catch (err) {
    console.error(JSON.stringify({ queue: "deliver", outcome: "routed_record_failed", error: String(err) }));
    unwritten = routed;
  }
  // Deliveries are handed over only once written; a probe needs nothing written to go.
  const probes = new Map(drafts.flatMap((draft) => (draft.lanedProbe ? [[draft.lanedProbe.destination, draft.lanedProbe.probe] as const] : [])));
  const woken = await pokeLanes(env, unwritten.length ? [] : drafts.flatMap((draft) => draft.laned), probes);
  for (const draft of drafts) {
    // A probe its lane did not get stays this round's: recorded as its probe, the next one is scheduled as usual.
    if (draft.lanedProbe && !woken.has(draft.lanedProbe.destination)) draft.probe = draft.lanedProbe.destination;
  }
  return { woken: unwritten.length ? new Set() : woken, unwritten };
}

/** Release messages: each makes the next chunk of its destination's held deliveries pending, if it is active. */
async function releaseEach(env: Env, releases: Message<ReleaseHeld>[]): Promise<void> {
  const config = loadDestinations(env);
  for (const message of releases) {
    const destination = message.body.release;
    try {
      // A destination paused again, or no longer configured, keeps what it holds.
      if (config.ok && config.destinations.some((d) => d.name === destination)) {
        const controls = await getControls(env.DB);
        if (stateOf(controls.get(destination)) === "active") await releaseChunk(env, destination, Date.now());
      }
      message.ack();
    } catch (err) {
      console.error(JSON.stringify({ queue: "deliver", destination, outcome: "release_failed", error: String(err) }));
      message.retry({ delaySeconds: RELEASE_RETRY_SECONDS });
    }
  }
}
