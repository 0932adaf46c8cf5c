-- Quarantined payloads can be released into events (#9.5): validated again with the current
-- schemas, or forced through as they are. The quarantine row is kept as the record of it.
ALTER TABLE events ADD COLUMN forced INTEGER NOT NULL DEFAULT 0;      -- 1: released from quarantine without passing validation
ALTER TABLE quarantine ADD COLUMN released_at INTEGER;               -- ms since epoch; NULL while still held
ALTER TABLE quarantine ADD COLUMN event_key TEXT;                    -- the event it became
ALTER TABLE quarantine ADD COLUMN forced INTEGER NOT NULL DEFAULT 0; -- 1: released with force=true past a failing validation
