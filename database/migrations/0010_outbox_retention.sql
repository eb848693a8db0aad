-- 0010: delivered notifications are purged after NOTIFY_RETENTION (services.housekeeping); this
-- index lets each purge batch find the oldest delivered rows without reading the whole outbox.
CREATE INDEX notification_outbox_delivered_idx ON notification_outbox (updated_at) WHERE status = 'DELIVERED';
