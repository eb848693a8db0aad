-- migrate: no-transaction
-- 0012: a payment's (and a refund's) gateway is a name in a format, no longer one of a list. 0008
-- checked `gateway IN ('simulator', 'stripe')`, so every new gateway needed a migration; the list
-- of gateways is now services/gateways/registry.py's table alone, and the database checks the
-- format of a name (the same rule as registry.NAME_RE and openapi.yaml's Payment.gateway).
-- Every row already holds one of the two names, which the new check admits: it is added NOT VALID
-- (no scan while the table is locked) and validated by a second statement that lets reads and
-- writes go on. Outside a transaction, each statement is safe to repeat after a failed run.
ALTER TABLE payments
    DROP CONSTRAINT IF EXISTS payments_gateway_check,
    ADD CONSTRAINT payments_gateway_check CHECK (gateway ~ '^[a-z][a-z0-9_]{0,31}$') NOT VALID;
ALTER TABLE payments VALIDATE CONSTRAINT payments_gateway_check;
ALTER TABLE payment_refunds
    DROP CONSTRAINT IF EXISTS payment_refunds_gateway_check,
    ADD CONSTRAINT payment_refunds_gateway_check CHECK (gateway ~ '^[a-z][a-z0-9_]{0,31}$') NOT VALID;
ALTER TABLE payment_refunds VALIDATE CONSTRAINT payment_refunds_gateway_check;
