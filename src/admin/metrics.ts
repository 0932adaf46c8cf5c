/**
 * GET /admin/metrics: the counters and gauges in Prometheus's text exposition format (0.0.4).
 * Every family is always listed (with HELP and TYPE), so a scraper sees it before its first sample.
 */
import { WAITING_FOR_CONFIGURATION } from "../deliver/consumer";
import type { Env } from "../env";
import { flushGathered } from "../receive/outcomes";
import { DURATION_BUCKETS, readMetrics, type CounterRow, type Labels } from "../store/metrics";

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const COUNTERS: [name: string, help: string][] = [
  ["edgehook_events_total", "Webhook requests by source, provider, type and outcome (accepted, duplicate, quarantined, refused)."],
  ["edgehook_deliveries_total", "Deliveries that reached a final status, by destination and status (delivered, gone, dead, cancelled, skipped)."],
  ["edgehook_attempts_total", "Forward attempts by destination and result (delivered, gone, failed, dead)."],
  ["edgehook_telemetry_failures_total", "Analytics Engine data points that could not be written (the event they describe was unaffected)."],
];
const HISTOGRAM = "edgehook_forward_duration_seconds";
const GAUGES: [key: "pending" | "held" | "dead" | "quarantined", help: string][] = [
  ["pending", "Deliveries pending or waiting for a retry."],
  ["held", "Events held while DESTINATIONS is invalid."],
  ["dead", "Deliveries that are dead (until replayed)."],
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
  return `${lines.join("\n")}\n`;
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
