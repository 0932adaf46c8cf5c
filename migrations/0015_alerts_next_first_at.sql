-- What was noted while an alert was on its way is the next alert's: when the first of it came.
-- (Without it the next alert said its count came "between" the last one's time and itself.)
ALTER TABLE alerts ADD COLUMN next_first_at INTEGER;  -- ms; set only while sending_until is in the future
