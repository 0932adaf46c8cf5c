/**
 * Steering a destination while it runs: pause and resume, the circuit breaker's probes, and the
 * release of held deliveries. The state is in D1 (store/controls.ts); this module adds the queue
 * messages that move held work again. Used by the operator API and console (pause, resume), the
 * consumer (a circuit opening or closing, a probe's outcome) and the cron (the safety net).
 *
 * Held deliveries are acked work: no queue message waits for them. Two kinds of message bring
 * them back: a probe (`{ eventKey, probe }`, delayed by circuit_probe_seconds) tries one of them
 * while the circuit is open, and a release (`{ release }`) makes the next RELEASE_CHUNK pending
 * and enqueues their events, then sends another release while more are held.
 */
import type { Env } from "../env";
import { getControls, halfOpen, heldCounts, probeCandidate, probeScheduled, releaseHeld, stateOf } from "../store/controls";
import type { Destination } from "./destinations";

/** Held deliveries one release makes pending: its events in 4 sends, within a queue batch's subrequests. */
export const RELEASE_CHUNK = 400;
/** Queue sendBatch takes at most 100 messages. */
const SEND_BATCH = 100;

/** Releases the next chunk of a destination's held deliveries, oldest first, and asks for the rest. */
export async function releaseChunk(env: Env, destination: string, now: number): Promise<{ released: number; more: boolean }> {
  const keys = await releaseHeld(env.DB, destination, RELEASE_CHUNK, now);
  for (let i = 0; i < keys.length; i += SEND_BATCH) {
    await env.EVENTS_QUEUE.sendBatch(keys.slice(i, i + SEND_BATCH).map((eventKey) => ({ body: { eventKey }, contentType: "json" as const })));
  }
  const more = keys.length === RELEASE_CHUNK;
  if (more) await env.EVENTS_QUEUE.send({ release: destination }, { contentType: "json" });
  return { released: keys.length, more };
}

/** Starts releasing a destination's held deliveries in the background of the queue (a circuit closed). */
export async function startRelease(env: Env, destination: string): Promise<void> {
  await env.EVENTS_QUEUE.send({ release: destination }, { contentType: "json" });
}

/**
 * Schedules the open circuit's next probe: its oldest unfinished delivery, sent to the queue to
 * arrive in circuit_probe_seconds. With nothing to probe with, the circuit half-opens: the next
 * delivery goes out and is the probe. Returns the probed event, or null.
 */
export async function scheduleProbe(env: Env, destination: Destination, now: number): Promise<string | null> {
  const eventKey = await probeCandidate(env.DB, destination.name);
  if (!eventKey) {
    await halfOpen(env.DB, destination.name, now);
    return null;
  }
  await probeScheduled(env.DB, destination.name, now + destination.probeSeconds * 1000, now);
  await env.EVENTS_QUEUE.send({ eventKey, probe: destination.name }, { contentType: "json", delaySeconds: destination.probeSeconds });
  return eventKey;
}

/**
 * The cron's safety net, for work a lost message would strand: an open circuit whose probe is a
 * whole interval overdue gets a new one, and an active destination that still has held
 * deliveries (a release message lost, or a round that held while a resume ran) is released.
 */
export async function tendDestinations(env: Env, destinations: Destination[], now: number): Promise<{ probes: number; released: number }> {
  const [controls, held] = await Promise.all([getControls(env.DB), heldCounts(env.DB)]);
  let probes = 0;
  let released = 0;
  for (const destination of destinations) {
    const control = controls.get(destination.name);
    const state = stateOf(control);
    if (state === "open" && (control!.probe_at ?? 0) + destination.probeSeconds * 1000 <= now) {
      if (await scheduleProbe(env, destination, now)) probes++;
    } else if (state === "active" && held.has(destination.name)) {
      released += (await releaseChunk(env, destination.name, now)).released;
    }
  }
  return { probes, released };
}
