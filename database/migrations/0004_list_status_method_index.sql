-- 0004: GET /v1/payments?status=...&method=... filtered on both columns read one index with
-- neither filter left to check row by row; a rare combination (say FAILED with UPI) otherwise
-- scanned every row of the status to find a page. Built without CONCURRENTLY because migrations
-- run in a transaction; on a large table, create it CONCURRENTLY by hand first (same name).
CREATE INDEX IF NOT EXISTS payments_status_method_created_idx
    ON payments (status, method, created_at DESC, payment_id DESC);
