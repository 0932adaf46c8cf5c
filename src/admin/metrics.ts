/**
 * GET /admin/metrics: the counters and gauges in Prometheus's text exposition format (0.0.4).
 * Every family is always listed (with HELP and TYPE), so a scraper sees it before its first sample.
 */
import { WAITING_FOR_CONFIGURATION } from "../deliver/consumer";
import { loadDestinations } from "../deliver/destinations";
import { getControls, heldCounts, stateOf } from "../store/controls";
import type { Env } from "../env";
import { flushGathered } from "../receive/outcomes";
import { DURATION_BUCKETS, readMetrics, type CounterRow, type Labels } from "../store/metrics";
import { DESTINATION_STATES } from "./schemas";

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const COUNTERS: [name: string, help: string][] = [
  ["edgehook_events_total", "Webhook requests by source, provider, type and outcome (accepted, duplicate, quarantined, refused)."],
  ["edgehook_deliveries_total", "Deliveries that reached a final status, by destination and status (delivered, gone, dead, cancelled, skipped, transform_failed)."],
  ["edgehook_transform_failures_total", "Transform failures by destination and kind (transform_error, transform_timeout, …): deliveries closed transform_failed, and attempts a passing fault failed."],
  ["edgehook_attempts_total", "Forward attempts by destination and result (delivered, gone, failed, dead)."],
  ["edgehook_alerts_total", "Alerts POSTed to ALERT_URL, by kind and result (sent, failed: the target refused or did not answer; it is retried)."],
  ["edgehook_deferred_total", "Forwards the destination's rate limit moved to a later delivery of their message (no attempt used), by destination."],
  ["edgehook_telemetry_failures_total", "Analytics Engine data points that could not be written (the event they describe was unaffected)."],
];
const HISTOGRAM = "edgehook_forward_duration_seconds";
const GAUGES: [key: "pending" | "held" | "dead" | "transform_failed" | "quarantined", help: string][] = [
  ["pending", "Deliveries pending or waiting for a retry."],
  ["held", "Events waiting while DESTINATIONS is invalid (not deliveries held by a paused destination: see edgehook_destination_held)."],
  ["dead", "Deliveries that are dead (until replayed)."],
  ["transform_failed", "Deliveries whose transform failed (until replayed; not retried)."],
  ["quarantined", "Quarantined payloads not released."],
];

export async function prometheusText(env: Env): Promise<string> {
  await flushGathered(env.DB);
  const { counters, gauges } = await readMetrics(env.DB, WAITING_FOR_CONFIGURATION);
  const lines: string[] = [];
  for (const [name, help] of COUNTERS) {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
    for (const row of counters.filter((c) => c.name === name)) lines.push(sample(name, row.labels, row.value));
  }
  lines.push(`# HELP ${HISTOGRAM} Time from a forward's start to its answer (or failure), by destination.`, `# TYPE ${HISTOGRAM} histogram`);
  lines.push(...histogramLines(counters));
  for (const [key, help] of GAUGES) {
    const name = `edgehook_${key}`;
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, sample(name, {}, gauges[key]));
  }
  lines.push(...(await destinationLines(env)));
  return `${lines.join("\n")}\n`;
}

/** Each configured destination's state (1 for the one it is in), held deliveries and run of failures. */
async function destinationLines(env: Env): Promise<string[]> {
  const config = loadDestinations(env);
  const destinations = config.ok ? config.destinations.map((d) => d.name) : [];
  const [controls, held] = await Promise.all([getControls(env.DB), heldCounts(env.DB)]);
  const lines = [
    "# HELP edgehook_destination_state 1 for the state each destination is in: active, paused or open (its circuit breaker holds deliveries).",
    "# TYPE edgehook_destination_state gauge",
  ];
  for (const destination of destinations) {
    const now = stateOf(controls.get(destination));
    for (const state of DESTINATION_STATES) lines.push(sample("edgehook_destination_state", { destination, state }, state === now ? 1 : 0));
  }
  lines.push("# HELP edgehook_destination_held Deliveries held by a paused destination or an open circuit.", "# TYPE edgehook_destination_held gauge");
  for (const destination of destinations) lines.push(sample("edgehook_destination_held", { destination }, held.get(destination) ?? 0));
  lines.push("# HELP edgehook_destination_consecutive_failures Failed attempts in a row (circuit_failures of them open the circuit).", "# TYPE edgehook_destination_consecutive_failures gauge");
  for (const destination of destinations) lines.push(sample("edgehook_destination_consecutive_failures", { destination }, controls.get(destination)?.failures ?? 0));
  return lines;
}

/** Buckets are stored one per bound; Prometheus wants them cumulative (`le` = at most this long). */
function histogramLines(counters: CounterRow[]): string[] {
  const of = (suffix: string) => counters.filter((c) => c.name === `${HISTOGRAM}_${suffix}`);
  const lines: string[] = [];
  for (const { labels, value: count } of of("count")) {
    const { destination } = labels;
    const buckets = of("bucket").filter((b) => b.labels.destination === destination);
    let cumulative = 0;
    for (const le of [...DURATION_BUCKETS.map(String), "+Inf"]) {
      cumulative += buckets.find((b) => b.labels.le === le)?.value ?? 0;
      lines.push(sample(`${HISTOGRAM}_bucket`, { destination: destination!, le }, cumulative));
    }
    const sum = of("sum").find((s) => s.labels.destination === destination)?.value ?? 0;
    lines.push(sample(`${HISTOGRAM}_sum`, { destination: destination! }, sum), sample(`${HISTOGRAM}_count`, { destination: destination! }, count));
  }
  return lines;
}

function sample(name: string, labels: Labels, value: number): string {
  const pairs = Object.entries(labels).map(([key, text]) => `${key}="${escapeLabel(text)}"`);
  return `${name}${pairs.length ? `{${pairs.join(",")}}` : ""} ${value}`;
}

/** The format's three escapes: backslash, double quote and line feed. */
function escapeLabel(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}
