-- migrate: no-transaction
-- 0004: GET /v1/payments?status=...&method=... filtered on both columns read one index with
-- neither filter left to check row by row; a rare combination (say FAILED with UPI) otherwise
-- scanned every row of the status to find a page. Built CONCURRENTLY, outside a transaction, so
-- payments keep being written while it builds on a large table. This file first built it inside
-- a transaction; a database that applied that text has the same index (database/migrate.py
-- accepts either checksum).
CREATE INDEX CONCURRENTLY IF NOT EXISTS payments_status_method_created_idx
    ON payments (status, method, created_at DESC, payment_id DESC);
