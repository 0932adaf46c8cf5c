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
import type { Env, QueuedEvent } from "../env";
import { enqueueEvents } from "../queues";
import { bytesToHex } from "../crypto";
import {
  awaitsDelivery, cancelRemoved, getControls, halfOpen, heldCounts, probeCandidate, probeScheduled, releaseHeld, stateOf, type ControlRow,
} from "../store/controls";
import type { Destination } from "./destinations";

/** Held deliveries one release makes pending: its events in 4 sends, within a queue batch's subrequests. */
export const RELEASE_CHUNK = 400;

/**
 * The destination whose open circuit this message is the current probe of, or null. Only the
 * message with the current probe id probes: an earlier one still around is an ordinary message.
 */
export function currentProbe(message: QueuedEvent, controls: Map<string, ControlRow>): string | null {
  const control = message.probe === undefined ? undefined : controls.get(message.probe);
  return control && stateOf(control) === "open" && message.probeId === control.probe_id ? control.destination : null;
}

/** Releases the next chunk of a destination's held deliveries, oldest first, and asks for the rest. */
export async function releaseChunk(env: Env, destination: string, now: number): Promise<{ released: number; more: boolean }> {
  const keys = await releaseHeld(env.DB, destination, RELEASE_CHUNK, now);
  await enqueueEvents(env.EVENTS_QUEUE, keys);
  const more = keys.length === RELEASE_CHUNK;
  if (more) await env.EVENTS_QUEUE.send({ release: destination }, { contentType: "json" });
  return { released: keys.length, more };
}

/** Starts releasing a destination's held deliveries in the background of the queue (a circuit closed). */
export async function startRelease(env: Env, destination: string): Promise<void> {
  await env.EVENTS_QUEUE.send({ release: destination }, { contentType: "json" });
}

/**
 * Schedules the open circuit's next probe: its first held delivery (see probeCandidate), sent to
 * the queue to arrive in circuit_probe_seconds, under a new probe id: only the message with the
 * destination's current id probes, so an earlier probe message still around (retried, late, or
 * sent again by the cron) is an ordinary message and probes never multiply. With nothing to
 * probe with, the circuit half-opens: deliveries go out again, and one more failure opens it.
 * Returns the probed event, or null.
 */
export async function scheduleProbe(env: Env, destination: Destination, delaySeconds = destination.probeSeconds): Promise<string | null> {
  const now = Date.now();
  const eventKey = await probeCandidate(env.DB, destination.name);
  if (!eventKey) {
    await halfOpen(env.DB, destination.name, now);
    return null;
  }
  const probeId = bytesToHex(crypto.getRandomValues(new Uint8Array(8)));
  await probeScheduled(env.DB, destination.name, probeId, eventKey, now + delaySeconds * 1000, now);
  await env.EVENTS_QUEUE.send({ eventKey, probe: destination.name, probeId }, { contentType: "json", delaySeconds });
  return eventKey;
}

/**
 * An open circuit's probe a whole interval overdue: lost, or only late (its queue is behind). The
 * same probe (its id, its event) is sent again at once, not replaced: whichever copy runs first
 * probes and hands the probe on, which makes the other an ordinary message, so a late probe
 * still counts and probes never multiply. A probe whose event no longer waits for the
 * destination (delivered by a replay, cancelled) is replaced.
 */
async function resendProbe(env: Env, destination: Destination, control: ControlRow, now: number): Promise<boolean> {
  const { probe_id: probeId, probe_event_key: eventKey } = control;
  if (!probeId || !eventKey || !(await awaitsDelivery(env.DB, destination.name, eventKey))) return (await scheduleProbe(env, destination)) !== null;
  await probeScheduled(env.DB, destination.name, probeId, eventKey, now + destination.probeSeconds * 1000, now);
  await env.EVENTS_QUEUE.send({ eventKey, probe: destination.name, probeId }, { contentType: "json" });
  return true;
}

/** Held deliveries of removed destinations one cron run cancels at most. */
const CANCEL_LIMIT = 1_000;

/**
 * The cron's safety net, for work a lost message would strand: an open circuit whose probe is a
 * whole interval overdue has it sent again, an active destination that still has held deliveries
 * (a release message lost, a round that held a delivery while a resume ran) is released, and
 * deliveries held for a destination removed from DESTINATIONS are cancelled.
 */
export async function tendDestinations(env: Env, destinations: Destination[], now: number): Promise<{ probes: number; released: number; cancelled: number }> {
  const cancelled = await cancelRemoved(env.DB, destinations.map((d) => d.name), CANCEL_LIMIT, now);
  const [controls, held] = await Promise.all([getControls(env.DB), heldCounts(env.DB)]);
  let probes = 0;
  let released = 0;
  for (const destination of destinations) {
    const control = controls.get(destination.name);
    const state = stateOf(control);
    // One destination's failure is logged and leaves the others their turn (the next run tries again).
    try {
      if (state === "open" && (control!.probe_at ?? 0) + destination.probeSeconds * 1000 <= now) {
        if (await resendProbe(env, destination, control!, now)) probes++;
      } else if (state === "active" && held.has(destination.name)) {
        released += (await releaseChunk(env, destination.name, now)).released;
      }
    } catch (err) {
      console.error(JSON.stringify({ cron: "destinations", destination: destination.name, outcome: "tend_failed", error: String(err) }));
    }
  }
  return { probes, released, cancelled };
}
