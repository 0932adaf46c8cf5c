/**
 * What a recorded round sets off, for the consumer and the lanes alike: dead-letter notices of
 * new dead deliveries, the circuits it moved (a first probe, the next probe, the release of what
 * a closed circuit held), and the alerts an operator gets.
 */
import type { Env } from "../env";
import type { Notice } from "../alerts/notify";
import { stateOf, type ControlRow } from "../store/controls";
import type { Round } from "../store/deliveries";
import { withDeadline } from "../deadline";
import { sendAll } from "../queues";
import { scheduleProbe, startRelease } from "./controls";
import type { Destination } from "./destinations";

/** How long the dead-letter notices may take before the batch is recorded without them. */
const DEAD_LETTER_SEND_MS = 5_000;

/**
 * Notices of new dead deliveries; those whose send failed or had not finished in time stay
 * unmarked (visible, and noticed again by a later round) and nothing else is held up. A batch's
 * notices may take several sends; none starts after the deadline, but one under way then may still
 * go out, so its notices can come twice (the dead-letter record keeps both).
 */
export async function sendDeadLetters(env: Env, all: Round[]): Promise<void> {
  const rounds = all.filter((round) => round.deadLettered.length || round.gaveUp);
  if (rounds.length === 0) return;
  const progress = { sent: 0, stopped: false };
  try {
    // Bounded: a hanging dead-letter queue must not hold the batch's record (and its acks) hostage.
    await withDeadline(
      // A batch of 100 rounds, each naming its destinations, can pass what one send takes.
      sendAll(env.DEAD_LETTER_QUEUE, rounds.map((round) => ({ body: { eventKey: round.eventKey, destinations: round.deadLettered }, contentType: "json" as const })), progress),
      DEAD_LETTER_SEND_MS,
      () => new Error(`dead-letter send took over ${DEAD_LETTER_SEND_MS} ms`),
    );
  } catch (err) {
    progress.stopped = true;
    console.error(JSON.stringify({ queue: "deliver", outcome: "dead_letter_send_failed", error: String(err) }));
    for (const round of rounds.slice(progress.sent)) round.deadLettered = [];
  }
}

/**
 * After a batch is recorded, the circuits it moved: one that opened gets its first probe, one
 * whose current probe message ran a round (the probe failed, got a 410, found nothing to try, or
 * the round failed) and is still open gets the next (at once if its transform skipped the event or
 * the event no longer routes there: the destination was not tried), and one that this batch's
 * success closed releases what it held. A paused circuit
 * is not probed (resuming it starts a probe). Anything that fails here is left to the cron's
 * safety net (deliver/controls.ts).
 */
export async function followCircuits(env: Env, destinations: Destination[], before: Map<string, ControlRow>, changed: ControlRow[], recorded: Round[], now: number): Promise<void> {
  const byName = new Map(destinations.map((d) => [d.name, d]));
  const after = new Map(before);
  for (const row of changed) after.set(row.destination, row);
  // Each destination to probe, and whether at once (rather than after its probe interval).
  const probes = new Map<string, boolean>();
  const releases = new Set<string>();
  for (const row of changed) {
    const wasOpen = before.get(row.destination)?.opened_at != null;
    if (row.opened_at === now && !wasOpen) probes.set(row.destination, false);
    // Closed by this batch's success, even a circuit another invocation opened after this batch read it.
    if (row.closed_at === now && row.paused_at === null) releases.add(row.destination);
  }
  for (const round of recorded) {
    const probed = round.probe;
    if (!probed || stateOf(after.get(probed)) !== "open") continue;
    // A probe whose transform skipped its event, or whose event no longer routes to the destination,
    // never reached it: the next held delivery probes at once (this one is closed, so it is not
    // picked again). Not after a failed transform: were the loader down, that would fail the whole
    // backlog at queue speed.
    const untried = round.closed.some((c) => c.destination === probed && (c.status === "skipped" || c.status === "cancelled"));
    probes.set(probed, untried);
  }
  for (const [name, atOnce] of probes) {
    const destination = byName.get(name);
    if (!destination || releases.has(name) || after.get(name)?.paused_at != null) continue;
    await scheduleProbe(env, destination, atOnce ? 0 : destination.probeSeconds).catch((err: unknown) => {
      console.error(JSON.stringify({ queue: "deliver", destination: name, outcome: "probe_schedule_failed", error: String(err) }));
    });
  }
  for (const name of releases) {
    await startRelease(env, name).catch((err: unknown) => {
      console.error(JSON.stringify({ queue: "deliver", destination: name, outcome: "release_failed", error: String(err) }));
    });
  }
}

/**
 * What a recorded batch tells an operator: deliveries gone dead, circuits opened or closed,
 * destinations paused by the 410 rule. A half-open circuit (nothing was left to probe with) has
 * not closed yet: its first success closes it.
 */
export function alertNotes(before: Map<string, ControlRow>, changed: ControlRow[], recorded: Round[], now: number): Notice[] {
  const notes: Notice[] = [];
  for (const round of recorded) {
    for (const change of [...round.records, ...round.closed]) {
      if (change.status === "dead") notes.push({ kind: "delivery_dead", subject: change.destination, count: 1 });
      if (change.status === "transform_failed") notes.push({ kind: "transform_failed", subject: change.destination, count: 1 });
    }
  }
  for (const row of changed) {
    const was = before.get(row.destination);
    if (row.opened_at === now && was?.opened_at == null) notes.push({ kind: "circuit_opened", subject: row.destination, count: 1 });
    if (row.closed_at === now) notes.push({ kind: "circuit_closed", subject: row.destination, count: 1 });
    if (row.paused_at === now && was?.paused_at == null) notes.push({ kind: "destination_paused", subject: row.destination, count: 1 });
  }
  return notes;
}
