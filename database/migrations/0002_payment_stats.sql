-- 0002: payment aggregates kept up to date by a trigger, so /metrics reads a few hundred rows
-- instead of scanning every payment. Rows are spread over 16 shards per (status, method) so
-- concurrent charges rarely wait for each other on the same counter row.

-- No writes to payments while the trigger is installed and the existing rows are counted.
LOCK TABLE payments IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE payment_stats (
    status         TEXT          NOT NULL,
    method         TEXT          NOT NULL,
    shard          SMALLINT      NOT NULL,
    payment_count  BIGINT        NOT NULL DEFAULT 0,
    amount_sum     NUMERIC(20,2) NOT NULL DEFAULT 0,
    refunded_sum   NUMERIC(20,2) NOT NULL DEFAULT 0,
    PRIMARY KEY (status, method, shard)
);

CREATE FUNCTION payment_stats_add(p_status TEXT, p_method TEXT, p_shard SMALLINT,
                                  d_count BIGINT, d_amount NUMERIC, d_refunded NUMERIC)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO payment_stats (status, method, shard, payment_count, amount_sum, refunded_sum)
    VALUES (p_status, p_method, p_shard, d_count, d_amount, d_refunded)
    ON CONFLICT (status, method, shard) DO UPDATE
       SET payment_count = payment_stats.payment_count + EXCLUDED.payment_count,
           amount_sum    = payment_stats.amount_sum + EXCLUDED.amount_sum,
           refunded_sum  = payment_stats.refunded_sum + EXCLUDED.refunded_sum;
$$;

CREATE FUNCTION payment_stats_track() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_first BOOLEAN;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM payment_stats_add(NEW.status, NEW.method, (NEW.payment_id % 16)::smallint,
                                  1, NEW.amount, NEW.amount_refunded);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM payment_stats_add(OLD.status, OLD.method, (OLD.payment_id % 16)::smallint,
                                  -1, -OLD.amount, -OLD.amount_refunded);
    ELSIF (OLD.status, OLD.method) = (NEW.status, NEW.method) THEN
        PERFORM payment_stats_add(NEW.status, NEW.method, (NEW.payment_id % 16)::smallint,
                                  0, NEW.amount - OLD.amount, NEW.amount_refunded - OLD.amount_refunded);
    ELSE
        -- Touch the two counter rows in a fixed order, so two transactions can never deadlock
        -- by taking them in opposite orders.
        old_first := (OLD.status, OLD.method) < (NEW.status, NEW.method);
        IF old_first THEN
            PERFORM payment_stats_add(OLD.status, OLD.method, (OLD.payment_id % 16)::smallint,
                                      -1, -OLD.amount, -OLD.amount_refunded);
        END IF;
        PERFORM payment_stats_add(NEW.status, NEW.method, (NEW.payment_id % 16)::smallint,
                                  1, NEW.amount, NEW.amount_refunded);
        IF NOT old_first THEN
            PERFORM payment_stats_add(OLD.status, OLD.method, (OLD.payment_id % 16)::smallint,
                                      -1, -OLD.amount, -OLD.amount_refunded);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION payment_stats_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM payment_stats;
    RETURN NULL;
END;
$$;

CREATE TRIGGER payments_track_stats
    AFTER INSERT OR DELETE OR UPDATE OF status, method, amount, amount_refunded ON payments
    FOR EACH ROW EXECUTE FUNCTION payment_stats_track();

CREATE TRIGGER payments_reset_stats
    AFTER TRUNCATE ON payments
    FOR EACH STATEMENT EXECUTE FUNCTION payment_stats_reset();

INSERT INTO payment_stats (status, method, shard, payment_count, amount_sum, refunded_sum)
SELECT status, method, (payment_id % 16)::smallint, count(*), sum(amount), sum(amount_refunded)
FROM payments
GROUP BY 1, 2, 3;
