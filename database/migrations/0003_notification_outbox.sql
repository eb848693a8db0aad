-- 0003: transactional outbox for notifications. A row is written in the same transaction as the
-- payment, refund or receipt it announces, and a dispatcher delivers it with retries.

CREATE TABLE notification_outbox (
    notification_id TEXT        PRIMARY KEY,
    event_type      TEXT        NOT NULL CHECK (event_type IN ('payment', 'refund', 'receipt')),
    payload         JSONB       NOT NULL,
    status          TEXT        NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts        INTEGER     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at    TIMESTAMPTZ
);

-- The dispatcher's question ("what is due?") and the operators' ("what died?") stay cheap however
-- many delivered rows accumulate.
CREATE INDEX notification_outbox_due_idx ON notification_outbox (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX notification_outbox_dead_idx ON notification_outbox (updated_at) WHERE status = 'DEAD';
