-- Failed admin-token attempts are now counted by the AUTH_FAILURES rate limiting binding (src/throttle.ts),
-- with no D1 write: a flood of guesses must not become write transactions on the one D1 writer.
DROP INDEX IF EXISTS login_failures_by_window;
DROP TABLE IF EXISTS login_failures;
