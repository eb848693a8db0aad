-- 0008: real gateways and reconciliation (contract section 8).
--
-- A payment remembers which gateway took it and the gateway's id of the transaction, so that a
-- PENDING payment can be looked up and settled later. `reconcile_after` / `reconcile_attempts`
-- schedule that look-up with a growing back-off; a NULL `reconcile_after` means "due now", which is
-- what rows loaded from a CSV get. The gateway token of the rider's payment method (e.g. Stripe's
-- `pm_...`, never card data) is kept so an attempt the gateway never received can be sent again.
ALTER TABLE payments
    ADD COLUMN gateway                TEXT CHECK (gateway IN ('simulator', 'stripe')),
    ADD COLUMN gateway_reference      TEXT CHECK (char_length(gateway_reference) <= 255),
    ADD COLUMN gateway_payment_method TEXT CHECK (char_length(gateway_payment_method) <= 255),
    ADD COLUMN reconcile_after        TIMESTAMPTZ,
    ADD COLUMN reconcile_attempts     INTEGER NOT NULL DEFAULT 0 CHECK (reconcile_attempts >= 0);

CREATE INDEX payments_pending_reconcile_idx ON payments (reconcile_after NULLS FIRST, payment_id)
    WHERE status = 'PENDING';

-- Refund records gain the gateway's verdict. Every record so far was written in the transaction that
-- counted it (COMPLETED), which is what SUCCEEDED now says. A FAILED record does not count towards
-- amount_refunded; a PENDING one does, so concurrent refunds never exceed the payment.
ALTER TABLE payment_refunds DROP CONSTRAINT payment_refunds_status_check;
UPDATE payment_refunds SET status = 'SUCCEEDED' WHERE status = 'COMPLETED';
ALTER TABLE payment_refunds
    ALTER COLUMN status SET DEFAULT 'SUCCEEDED',
    ADD CONSTRAINT payment_refunds_status_check CHECK (status IN ('SUCCEEDED', 'PENDING', 'FAILED')),
    ADD COLUMN gateway            TEXT CHECK (gateway IN ('simulator', 'stripe')),
    ADD COLUMN gateway_reference  TEXT CHECK (char_length(gateway_reference) <= 255),
    ADD COLUMN error_code         TEXT,
    ADD COLUMN updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN reconcile_after    TIMESTAMPTZ,
    ADD COLUMN reconcile_attempts INTEGER NOT NULL DEFAULT 0 CHECK (reconcile_attempts >= 0);

CREATE INDEX payment_refunds_pending_reconcile_idx ON payment_refunds (reconcile_after NULLS FIRST, refund_id)
    WHERE status = 'PENDING';

-- A refund's recovery point, as payment_id is the charge's: the refund attempt recorded under this
-- key, gateway maybe called. A retry with the key answers from that record instead of refunding again.
ALTER TABLE idempotency_keys ADD COLUMN refund_id BIGINT REFERENCES payment_refunds (refund_id);

-- Reconciliation leaves alone a payment whose charge request still holds its key (it is in flight).
-- Only claims in progress are indexed, so the index stays as small as the requests in flight.
CREATE INDEX idempotency_keys_locked_payment_idx ON idempotency_keys (payment_id)
    WHERE lock_token IS NOT NULL AND payment_id IS NOT NULL;

-- The simulated gateway's own ledger, as a processor keeps one: one row per gateway idempotency key
-- (a repeated call finds its row and changes nothing). It lives in the service's database only
-- because the simulator is embedded; the service's own tables never read it.
CREATE TABLE simulator_transactions (
    idempotency_key  TEXT          PRIMARY KEY,
    reference        TEXT          NOT NULL UNIQUE,
    kind             TEXT          NOT NULL CHECK (kind IN ('payment', 'refund')),
    payment_key      TEXT          REFERENCES simulator_transactions (idempotency_key),
    amount           NUMERIC(10,2) NOT NULL CHECK (amount > 0),
    amount_captured  NUMERIC(10,2) NOT NULL DEFAULT 0 CHECK (amount_captured >= 0),
    amount_refunded  NUMERIC(10,2) NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    currency         CHAR(3)       NOT NULL,
    capture          BOOLEAN       NOT NULL DEFAULT true,
    status           TEXT          NOT NULL
                     CHECK (status IN ('PENDING', 'SUCCEEDED', 'REQUIRES_CAPTURE', 'FAILED', 'CANCELED')),
    error_code       TEXT,
    settles_at       TIMESTAMPTZ,
    created_at       TIMESTAMPTZ   NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ   NOT NULL DEFAULT now(),
    CHECK (amount_captured <= amount AND amount_refunded <= amount_captured),
    CHECK ((kind = 'refund') = (payment_key IS NOT NULL))
);
