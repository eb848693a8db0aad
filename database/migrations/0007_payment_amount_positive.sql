-- 0007: a payment of 0.00 never exists (contract section 7, "Amount bounds"). 0001 allowed
-- amount = 0, and earlier versions charged a fare that rounded to 0.00 or a cancellation fee of 0.
-- The new check applies to every new or changed row at once. Rows of 0.00 written by an earlier
-- version are not rewritten here (they are a record of what was answered); the check is validated
-- over old rows only when there are none, and the migration says how many there are otherwise.
ALTER TABLE payments ADD CONSTRAINT payments_amount_positive CHECK (amount > 0) NOT VALID;

DO $$
DECLARE
    zero_rows BIGINT;
BEGIN
    SELECT count(*) INTO zero_rows FROM payments WHERE amount <= 0;
    IF zero_rows = 0 THEN
        ALTER TABLE payments VALIDATE CONSTRAINT payments_amount_positive;
    ELSE
        RAISE WARNING '% payments of 0.00 from an earlier version remain; new ones are refused', zero_rows;
    END IF;
END;
$$;
