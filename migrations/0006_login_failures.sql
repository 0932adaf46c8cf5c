-- Failed console sign-ins per client (#9.9), in D1 so the slow-down holds across isolates.
-- Never the submitted token: only who tried, how often, since when.
CREATE TABLE login_failures (
  client            TEXT PRIMARY KEY,   -- CF-Connecting-IP; an IPv6 address by its /64
  failures          INTEGER NOT NULL,   -- sign-in attempts in the window not yet cleared by a success
  window_started_at INTEGER NOT NULL    -- ms since epoch; the count ends LOGIN_WINDOW_MS later
);
-- Expired windows are deleted as new failures arrive.
CREATE INDEX login_failures_by_window ON login_failures (window_started_at);
