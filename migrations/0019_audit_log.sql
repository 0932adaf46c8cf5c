-- Who did what: every operator action (src/admin/audit.ts), refused ones included. Never a secret
-- or a payload: `detail` holds the action's parameters and counts only. Purged by the cron after
-- AUDIT_RETENTION_DAYS (default RETENTION_DAYS).
CREATE TABLE audit_log (
  id       INTEGER PRIMARY KEY AUTOINCREMENT,
  at       INTEGER NOT NULL,   -- ms; when the action was asked for
  actor    TEXT NOT NULL,      -- the Access identity (email, service token's client id) or "admin-token"
  via      TEXT NOT NULL,      -- access | token (the admin API's bearer token) | session (the console's token session)
  role     TEXT NOT NULL,      -- viewer | operator: the role the actor held
  address  TEXT,               -- CF-Connecting-IP
  action   TEXT NOT NULL,      -- pause | resume | replay | bulk_replay | release | preview | sign_in | sign_out
  target   TEXT,               -- the destination, the event, the quarantined payload; NULL for a bulk replay of every destination
  detail   TEXT,               -- JSON, small: the filter of a bulk replay and its count, force, the event previewed…
  result   TEXT NOT NULL,      -- pending (written before the action runs), ok, or the refusal's or error's code
  status   INTEGER             -- the HTTP status answered; NULL while pending
);
CREATE INDEX audit_log_at ON audit_log (at, id);
CREATE INDEX audit_log_actor ON audit_log (actor, at, id);
