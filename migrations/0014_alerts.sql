-- Alerts to ALERT_URL, coalesced per kind and subject (a destination, a provider, the sweep…):
-- at most one per ALERT_COOLDOWN_SECONDS, carrying the count of what happened since the last.
-- In D1, so the cooldown holds across isolates and invocations (src/store/alerts.ts).
CREATE TABLE alerts (
  kind          TEXT NOT NULL,       -- delivery_dead | circuit_opened | circuit_closed | destination_paused | …
  subject       TEXT NOT NULL,       -- what it is about: a destination's name, a provider, "DESTINATIONS", "sweep"
  pending       INTEGER NOT NULL DEFAULT 0,  -- occurrences not yet sent
  first_at      INTEGER,             -- ms; the first and last of them
  last_at       INTEGER,
  due_at        INTEGER,             -- ms; a send is scheduled for then (a queue message is on its way); NULL: none
  last_sent_at  INTEGER,             -- ms; the cooldown runs from here
  sending_until INTEGER,             -- ms; a consumer is sending it now (another message for it then leaves it be)
  sent          INTEGER NOT NULL DEFAULT 0,  -- alerts delivered to ALERT_URL
  failed        INTEGER NOT NULL DEFAULT 0,  -- attempts ALERT_URL refused or did not answer
  PRIMARY KEY (kind, subject)
);
