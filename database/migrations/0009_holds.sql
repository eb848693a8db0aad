-- 0009: holds (contract section 9): authorize when the trip is accepted, capture or void at its end.
--
-- A hold is a payment with `authorized_amount` set: the amount held at the gateway. While it is
-- AUTHORIZED, `amount` equals the hold; a capture sets `amount` to what was taken and keeps
-- `authorized_amount`. A capture or void in flight is a PENDING payment with `hold_action` naming
-- it (and, for a capture, `capture_amount` and the final fare): recorded before the gateway is
-- called, so a lost answer is settled by reconciliation from this record and never sent twice.
--
-- Upgrading: the live-payment index changes its predicate, and a process of the previous release
-- names the old predicate in its ON CONFLICT clause, so it cannot charge once this has run. Stop or
-- drain the old release's processes before running this migration (see the README's *Upgrading*).
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments
    ADD CONSTRAINT payments_status_check CHECK (status IN ('SUCCESS', 'PENDING', 'FAILED', 'REFUNDED',
                                                           'PARTIALLY_REFUNDED', 'AUTHORIZED', 'VOIDED')),
    ADD COLUMN authorized_amount NUMERIC(10,2) CHECK (authorized_amount > 0),
    -- 'expire': a void reconciliation started because the hold outlived HOLD_TTL.
    ADD COLUMN hold_action       TEXT CHECK (hold_action IN ('capture', 'void', 'expire')),
    ADD COLUMN capture_amount    NUMERIC(10,2) CHECK (capture_amount > 0),
    ADD COLUMN capture_fare      JSONB,
    -- When the hold was captured: the day it was paid, which its receipt shows (a hold may last days).
    ADD COLUMN captured_at       TIMESTAMPTZ,
    -- Nothing is ever taken beyond the hold.
    ADD CONSTRAINT payments_within_authorization
        CHECK (authorized_amount IS NULL OR (amount <= authorized_amount AND capture_amount <= authorized_amount)),
    -- Only a hold can be AUTHORIZED or VOIDED, and only a hold's PENDING state can be a capture or void in flight.
    ADD CONSTRAINT payments_hold_states
        CHECK ((status NOT IN ('AUTHORIZED', 'VOIDED') OR authorized_amount IS NOT NULL)
               AND (hold_action IS NULL OR (status = 'PENDING' AND authorized_amount IS NOT NULL))
               AND (capture_amount IS NULL OR hold_action = 'capture'));

-- One live payment per trip now counts AUTHORIZED holds and frees the trip on VOIDED, like FAILED.
DROP INDEX payments_one_live_per_trip;
CREATE UNIQUE INDEX payments_one_live_per_trip ON payments (trip_id) WHERE status NOT IN ('FAILED', 'VOIDED');

-- Reconciliation voids holds older than HOLD_TTL; only live holds are indexed.
CREATE INDEX payments_authorized_created_idx ON payments (created_at, payment_id) WHERE status = 'AUTHORIZED';
