-- Sources: one provider may be served at several paths (/webhooks/<source>), each with its own
-- secrets. Every event and quarantined payload records the source it arrived through. Rows stored
-- before this came through their provider's built-in source, which is named after the provider.
-- Idempotency is unchanged: the unique key stays (provider, type, event_id), so one provider event
-- arriving through two sources is one row, and the first one stored keeps its source.
ALTER TABLE events ADD COLUMN source TEXT;
UPDATE events SET source = provider;

ALTER TABLE quarantine ADD COLUMN source TEXT;
UPDATE quarantine SET source = provider;

-- The event log and GET /admin/events filter by source=, newest first: an index range, as for tenant.
CREATE INDEX events_by_source ON events (source, received_at DESC);
