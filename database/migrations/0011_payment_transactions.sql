-- 0011: a payment's history as transactions, and its allowed status changes (contract section 13).
--
-- Every money operation on a payment is one row of payment_transactions: a charge one PURCHASE, a
-- hold one AUTHORIZE and then a CAPTURE or VOID, each refund one REFUND carrying its refund_id. A row
-- is written PENDING before the gateway is called and settled once, in the transaction that records
-- the payment's new status. Names and transitions come from models/states.py; a test compares this
-- database with it.
--
-- Upgrading: processes of the previous release do not write transactions. Stop or drain them before
-- running this migration, as for 0009 (docs/operations.md, *Upgrading*); rows they wrote before it
-- runs get their transactions here.
CREATE TABLE payment_transactions (
    transaction_id    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id        BIGINT        NOT NULL REFERENCES payments (payment_id),
    kind              TEXT          NOT NULL
                      CHECK (kind IN ('AUTHORIZE', 'CAPTURE', 'PURCHASE', 'VOID', 'REFUND', 'CHARGEBACK')),
    status            TEXT          NOT NULL CHECK (status IN ('PENDING', 'SUCCEEDED', 'FAILED')),
    amount            NUMERIC(10,2) NOT NULL,
    currency          CHAR(3)       NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- Open to any gateway the registry knows: adding a gateway needs no migration.
    gateway           TEXT          CHECK (gateway ~ '^[a-z][a-z0-9_]{0,31}$'),
    gateway_reference TEXT          CHECK (char_length(gateway_reference) <= 255),
    error_code        TEXT,
    refund_id         BIGINT        REFERENCES payment_refunds (refund_id),
    created_at        TIMESTAMPTZ   NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ   NOT NULL DEFAULT now(),
    CHECK ((kind = 'REFUND') = (refund_id IS NOT NULL)),
    CHECK (status = 'FAILED' OR error_code IS NULL)
) WITH (fillfactor = 90);  -- room on each page for the outcome's heap-only update
-- A payment's history, oldest first. No index names `status`: an outcome's UPDATE then changes no
-- indexed column and stays a heap-only update (on the charge's hot path, measured: indexing status
-- cost about a tenth more database CPU per charge). Which operation may start is settled on the
-- payment's row (its status guard), and one refund per refund record by the unique index below.
CREATE INDEX payment_transactions_payment_idx ON payment_transactions (payment_id, transaction_id);
CREATE UNIQUE INDEX payment_transactions_refund_idx ON payment_transactions (refund_id) WHERE refund_id IS NOT NULL;

-- The history of the rows that exist. Payments of 0.00 an earlier version wrote (see 0007) get none:
-- nothing moved, and their amount still equals the sum of their (no) transactions.
INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, gateway, gateway_reference,
                                  error_code, created_at, updated_at)
SELECT payment_id,
       CASE WHEN authorized_amount IS NULL THEN 'PURCHASE' ELSE 'AUTHORIZE' END,
       CASE WHEN status = 'FAILED' THEN 'FAILED'
            WHEN status = 'PENDING' AND hold_action IS NULL THEN 'PENDING'
            ELSE 'SUCCEEDED' END,
       coalesce(authorized_amount, amount), currency, gateway, gateway_reference,
       CASE WHEN status = 'FAILED' THEN error_code END,
       created_at,
       CASE WHEN authorized_amount IS NULL OR status IN ('FAILED', 'PENDING') THEN updated_at ELSE created_at END
  FROM payments
 WHERE amount > 0
 ORDER BY payment_id;
-- A hold's second step: its capture (in flight, or done) or its void (in flight, or done).
INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, gateway, gateway_reference,
                                  created_at, updated_at)
SELECT payment_id,
       CASE WHEN hold_action = 'capture' OR status IN ('SUCCESS', 'PARTIALLY_REFUNDED', 'REFUNDED')
            THEN 'CAPTURE' ELSE 'VOID' END,
       CASE WHEN status = 'PENDING' THEN 'PENDING' ELSE 'SUCCEEDED' END,
       CASE WHEN status = 'PENDING' THEN coalesce(capture_amount, authorized_amount)
            WHEN status = 'VOIDED' THEN authorized_amount
            ELSE amount END,
       currency, gateway, gateway_reference,
       coalesce(captured_at, updated_at), coalesce(captured_at, updated_at)
  FROM payments
 WHERE authorized_amount IS NOT NULL
   AND (hold_action IS NOT NULL OR status IN ('SUCCESS', 'PARTIALLY_REFUNDED', 'REFUNDED', 'VOIDED'))
 ORDER BY payment_id;
INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, gateway, gateway_reference,
                                  error_code, refund_id, created_at, updated_at)
SELECT r.payment_id, 'REFUND', r.status, r.refund_amount, p.currency, r.gateway, r.gateway_reference,
       CASE WHEN r.status = 'FAILED' THEN r.error_code END, r.refund_id, r.created_at, r.updated_at
  FROM payment_refunds AS r
  JOIN payments AS p ON p.payment_id = r.payment_id
 ORDER BY r.refund_id;
-- Checked for new rows only, like payments_amount_positive (an old 0.00 payment has none anyway).
ALTER TABLE payment_transactions ADD CONSTRAINT payment_transactions_amount_positive CHECK (amount > 0);

-- The allowed changes of payments.status, enforced on every UPDATE whatever statement makes it.
CREATE TABLE payment_status_transitions (
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
INSERT INTO payment_status_transitions (from_status, to_status) VALUES
    ('PENDING', 'SUCCESS'), ('PENDING', 'FAILED'), ('PENDING', 'AUTHORIZED'), ('PENDING', 'VOIDED'),
    ('AUTHORIZED', 'PENDING'),
    ('SUCCESS', 'PARTIALLY_REFUNDED'), ('SUCCESS', 'REFUNDED'), ('PARTIALLY_REFUNDED', 'REFUNDED'),
    ('PARTIALLY_REFUNDED', 'SUCCESS'), ('REFUNDED', 'PARTIALLY_REFUNDED'), ('REFUNDED', 'SUCCESS');

CREATE FUNCTION payments_check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM payment_status_transitions WHERE from_status = OLD.status AND to_status = NEW.status;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % cannot go from % to %', OLD.payment_id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_status_transition';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER payments_status_transition
    BEFORE UPDATE OF status ON payments
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION payments_check_transition();
