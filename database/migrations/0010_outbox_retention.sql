-- migrate: no-transaction
-- 0010: delivered notifications are purged after NOTIFY_RETENTION (services.housekeeping); this
-- index lets each purge batch find the oldest delivered rows without reading the whole outbox.
-- Before this release nothing was purged, so the outbox is at its largest when this runs, and
-- every charge, refund and receipt writes to it: the index is built CONCURRENTLY, outside a
-- transaction, so those writes go on meanwhile. This file first built it inside a transaction; a
-- database that applied that text has the same index (database/migrate.py accepts either checksum).
CREATE INDEX CONCURRENTLY IF NOT EXISTS notification_outbox_delivered_idx
    ON notification_outbox (updated_at) WHERE status = 'DELIVERED';
