/**
 * SQL terms of partial indexes, for the queries that should use them: SQLite uses a partial index
 * only where the query states the index's WHERE term itself.
 */

/** The term of the indexes of deliveries by status and by destination (migrations/0021): every status but `delivered`. */
export const NOT_DELIVERED = "status <> 'delivered'";
