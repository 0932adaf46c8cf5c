-- Prometheus counters (#12): kept in their own rows, incremented in the D1 batches that already
-- write (the consumer's record, the quarantine write), so they never go down, retention included.
CREATE TABLE metric_counters (
  name   TEXT NOT NULL,      -- e.g. edgehook_events_total, edgehook_forward_duration_seconds_bucket
  labels TEXT NOT NULL,      -- JSON object of label values, keys in a fixed order
  value  REAL NOT NULL,
  PRIMARY KEY (name, labels)
) WITHOUT ROWID;
