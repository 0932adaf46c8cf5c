-- The console filters the event log by tenant and counts dead deliveries; keep both fast at 100,000+ events.
CREATE INDEX events_by_tenant ON events (tenant, received_at DESC);
CREATE INDEX deliveries_by_updated ON deliveries (updated_at);
