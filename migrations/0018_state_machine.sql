-- The controls' state machine.
-- When a success last closed the destination's circuit (ms): the batch whose success it was
-- knows from it that it closed the circuit, even one another invocation opened a moment before.
ALTER TABLE destination_state ADD COLUMN closed_at INTEGER;
-- The event the current probe message delivers: the cron sends an overdue probe again with the
-- same id for the same event, so a probe that is only late still probes, and only one of them does.
ALTER TABLE destination_state ADD COLUMN probe_event_key TEXT;

-- Events that gave up while a delivery was held were marked dead: held work is never purged.
UPDATE events SET status = 'held'
WHERE status = 'dead' AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_key = events.key AND d.status = 'held')
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_key = events.key AND d.status IN ('pending', 'failed'));
-- Deliveries made pending by a release whose event update never happened: unfinished again, for the sweep.
UPDATE events SET status = 'queued'
WHERE status IN ('held', 'dead') AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_key = events.key AND d.status IN ('pending', 'failed'));
