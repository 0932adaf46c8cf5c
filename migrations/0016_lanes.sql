-- Lanes (src/deliver/lane.ts): a destination whose forwards run past the lane budget is moved to
-- a lane of its own, one Durable Object that forwards its deliveries at its own pace, so queue
-- batches never wait on it. The consumer keeps forwarding every other destination.
ALTER TABLE destination_state ADD COLUMN lane_since INTEGER;   -- ms; in its own lane since then (NULL: the consumer's)
ALTER TABLE destination_state ADD COLUMN lane_reason TEXT;     -- why it was moved there
ALTER TABLE deliveries ADD COLUMN lane INTEGER NOT NULL DEFAULT 0;  -- 1: its destination's lane sends it, not the consumer
CREATE INDEX deliveries_in_lane ON deliveries (destination, next_attempt_at) WHERE lane = 1 AND status IN ('pending', 'failed');
