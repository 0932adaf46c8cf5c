/**
 * D1 access for the Prometheus counters. All SQL for this table lives here. Counters are never
 * recomputed from rows the purge deletes: each is its own row, incremented by statements that
 * ride in a batch the caller writes anyway.
 */
import { NOT_DELIVERED } from "./indexes";

export type Labels = Record<string, string>;

/** Upper bounds (seconds) of the forward-duration histogram's buckets; +Inf is implied. */
export const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] as const;

/** Increments gathered while a batch is handled, written as one statement per counter. */
export class CounterDeltas {
  private readonly deltas = new Map<string, { name: string; labels: string; by: number }>();

  add(name: string, labels: Labels, by = 1): void {
    const text = JSON.stringify(labels);
    const key = `${name}\u0000${text}`;
    const delta = this.deltas.get(key);
    if (delta) delta.by += by;
    else this.deltas.set(key, { name, labels: text, by });
  }

  /** A webhook request's outcome, by the source (path) it arrived through and its provider. */
  event(source: string, provider: string, type: string, outcome: "accepted" | "duplicate" | "quarantined" | "refused"): void {
    this.add("edgehook_events_total", { source, provider, type, outcome });
  }

  /** One observation of a forward: its bucket (stored per bucket, summed into `le` on reading), sum and count. */
  observeForward(destination: string, seconds: number): void {
    const bound = DURATION_BUCKETS.find((le) => seconds <= le);
    this.add("edgehook_forward_duration_seconds_bucket", { destination, le: bound === undefined ? "+Inf" : String(bound) });
    this.add("edgehook_forward_duration_seconds_sum", { destination }, seconds);
    this.add("edgehook_forward_duration_seconds_count", { destination });
  }

  get size(): number {
    return this.deltas.size;
  }

  statements(db: D1Database): D1PreparedStatement[] {
    return [...this.deltas.values()].map(({ name, labels, by }) =>
      db
        .prepare(
          `INSERT INTO metric_counters (name, labels, value) VALUES (?1, ?2, ?3)
           ON CONFLICT (name, labels) DO UPDATE SET value = value + ?3`,
        )
        .bind(name, labels, by),
    );
  }
}

export interface CounterRow {
  name: string;
  labels: Labels;
  value: number;
}

export interface Gauges {
  pending: number;
  held: number;
  dead: number;
  transform_failed: number;
  quarantined: number;
}

/** Every counter, and the gauges read from the rows they describe, in one round trip. */
export async function readMetrics(db: D1Database, heldReason: string): Promise<{ counters: CounterRow[]; gauges: Gauges }> {
  const [counters, gauges] = await db.batch([
    db.prepare(`SELECT name, labels, value FROM metric_counters ORDER BY name, labels`),
    db
      .prepare(
        // NOT_DELIVERED: the term of the partial index by status (migrations/0021), so these count its entries.
        `SELECT (SELECT count(*) FROM deliveries WHERE status IN ('pending', 'failed') AND ${NOT_DELIVERED}) AS pending,
                (SELECT count(*) FROM events WHERE last_error = ?1 AND status IN ('received', 'queued', 'failed')) AS held,
                (SELECT count(*) FROM deliveries WHERE status = 'dead' AND ${NOT_DELIVERED}) AS dead,
                (SELECT count(*) FROM deliveries WHERE status = 'transform_failed' AND ${NOT_DELIVERED}) AS transform_failed,
                (SELECT count(*) FROM quarantine WHERE released_at IS NULL) AS quarantined`,
      )
      .bind(heldReason),
  ]);
  return {
    counters: (counters!.results as { name: string; labels: string; value: number }[]).map((row) => ({
      name: row.name,
      labels: JSON.parse(row.labels) as Labels,
      value: row.value,
    })),
    gauges: gauges!.results[0] as Gauges,
  };
}
