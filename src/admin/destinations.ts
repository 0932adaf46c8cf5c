/** What the operator API and the console both do with destinations: their state, pause and resume. */
import { releaseChunk, scheduleProbe } from "../deliver/controls";
import { loadDestinations, placeholders, type Destination } from "../deliver/destinations";
import type { Env } from "../env";
import { HttpError } from "../errors";
import { getControls, heldCounts, pause, PAUSED_BY_OPERATOR, resume, stateOf, type ControlRow } from "../store/controls";
import { configuredDestinations, iso } from "./operations";
import type { AlertsView, DestinationConfigView, DestinationControlView, DestinationView } from "./schemas";
import { ALERT_FORMATS, alertConfig } from "../alerts/config";
import { alertTiming, notify } from "../alerts/notify";
import { listAlerts } from "../store/alerts";

/** A destination's declaration as the operator wrote it, but of its headers only names and the secret bindings they use. */
export function configView({ config }: Destination): DestinationConfigView {
  const { headers, ...rest } = config;
  return headers ? { ...rest, headers: Object.entries(headers).map(([name, value]) => ({ name, bindings: placeholders(value) })) } : rest;
}

export function destinationView(destination: Destination, control: ControlRow | undefined, held: number): DestinationView {
  return {
    name: destination.name,
    config: configView(destination),
    state: stateOf(control),
    held,
    pausedAt: iso(control?.paused_at ?? null),
    pausedReason: control?.paused_reason ?? null,
    consecutiveFailures: control?.failures ?? 0,
    circuitOpenedAt: iso(control?.opened_at ?? null),
    nextProbeAt: control?.opened_at != null ? iso(control.probe_at) : null,
    lastSuccessAt: iso(control?.last_success_at ?? null),
    lastFailureAt: iso(control?.last_failure_at ?? null),
    lane: control?.lane_since != null ? "own" : "consumer",
    laneSince: iso(control?.lane_since ?? null),
    laneReason: control?.lane_reason ?? null,
  };
}

/** Every configured destination with its state, or DESTINATIONS' errors. */
export async function destinationsView(env: Env): Promise<{ valid: true; destinations: DestinationView[] } | { valid: false; errors: string[] }> {
  const config = loadDestinations(env);
  if (!config.ok) return { valid: false, errors: config.errors };
  const [controls, held] = await Promise.all([getControls(env.DB), heldCounts(env.DB)]);
  return { valid: true, destinations: config.destinations.map((d) => destinationView(d, controls.get(d.name), held.get(d.name) ?? 0)) };
}

function requireConfigured(env: Env, name: string): Destination {
  const destination = configuredDestinations(env).find((d) => d.name === name);
  if (!destination) throw new HttpError(404, "unknown_destination", `no destination named "${name}" in DESTINATIONS`);
  return destination;
}

/** Alerts as the operator API and the console show them (never ALERT_URL's or ALERT_SECRET's value). */
export async function alertsView(env: Env): Promise<AlertsView> {
  const checked = alertConfig(env);
  const { cooldownMs, groupWaitMs } = alertTiming(env);
  return {
    configured: Boolean(env.ALERT_URL),
    valid: checked.ok,
    errors: checked.ok ? [] : checked.errors,
    format: ALERT_FORMATS.find((format) => format === (env.ALERT_FORMAT ?? "slack")) ?? null,
    signed: Boolean(env.ALERT_SECRET),
    cooldownSeconds: cooldownMs / 1000,
    groupWaitSeconds: groupWaitMs / 1000,
    alerts: (await listAlerts(env.DB)).map((row) => ({
      kind: row.kind, subject: row.subject, pending: Math.max(0, row.pending), firstAt: iso(row.first_at), lastAt: iso(row.last_at),
      dueAt: iso(row.due_at), lastSentAt: iso(row.last_sent_at), sent: row.sent, failed: row.failed,
    })),
  };
}

/** Pauses a destination: from its next round on, its deliveries are held. */
export async function pauseDestination(env: Env, name: string): Promise<DestinationControlView> {
  const destination = requireConfigured(env, name);
  const { control, changed } = await pause(env.DB, name, PAUSED_BY_OPERATOR, Date.now());
  // Pausing a paused destination changes nothing, so it tells nobody anything.
  if (changed) await notify(env, [{ kind: "destination_paused", subject: name, count: 1 }]);
  const held = (await heldCounts(env.DB)).get(name) ?? 0;
  return { destination: destinationView(destination, control, held), released: 0 };
}

/**
 * Resumes a destination and, unless its circuit is open (its probe then releases them), releases
 * the first chunk of what it held; the rest follow through the queue.
 */
export async function resumeDestination(env: Env, name: string): Promise<DestinationControlView> {
  const destination = requireConfigured(env, name);
  const now = Date.now();
  const { control, changed } = await resume(env.DB, name, now);
  if (changed) await notify(env, [{ kind: "destination_resumed", subject: name, count: 1 }], now);
  let released = 0;
  try {
    // Still open after a pause: no probe ran while it was paused, so one starts now and releases
    // what it held once it succeeds. Not when it was not paused: its probe is on its way already.
    if (changed && stateOf(control) === "open") await scheduleProbe(env, destination);
    if (stateOf(control) === "active") released = (await releaseChunk(env, name, now)).released;
  } catch (err) {
    // Resumed all the same: the cron's safety net sends an overdue probe, and releases what an active destination still holds.
    console.error(JSON.stringify({ destination: name, outcome: stateOf(control) === "open" ? "probe_schedule_failed" : "release_failed", error: String(err) }));
  }
  const held = (await heldCounts(env.DB)).get(name) ?? 0;
  return { destination: destinationView(destination, control, held), released };
}
