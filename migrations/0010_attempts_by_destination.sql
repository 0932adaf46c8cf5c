-- The console's per-destination charts (#12) read each destination's forward attempts of the
-- last day: how many, how many answered 2xx, and their p95 duration. Without this index each
-- is a scan of every attempt kept; with it, a range scan of that destination's day in the index
-- alone (covering).
CREATE INDEX delivery_attempts_by_destination ON delivery_attempts (destination, started_at, duration_ms, status_code);
