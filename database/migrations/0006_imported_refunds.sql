-- 0006: refund records for refunds the seed loader stored only as amount_refunded. Before issue 16
-- the loader set amount_refunded = amount on REFUNDED rows without a row in payment_refunds, so their
-- receipts showed no refund and /metrics total_refunded disagreed with the refund records. Each payment
-- whose amount_refunded exceeds the sum of its refund records that are not FAILED gets one record for
-- the difference (reason 'imported', dated when the payment last changed), which restores the ledger
-- invariant: amount_refunded equals the sum of those records. Payments already consistent get nothing.
INSERT INTO payment_refunds (payment_id, refund_amount, reason, created_at)
SELECT p.payment_id, p.amount_refunded - COALESCE(r.recorded, 0), 'imported', p.updated_at
FROM payments AS p
LEFT JOIN (SELECT payment_id, sum(refund_amount) AS recorded
           FROM payment_refunds
           WHERE status <> 'FAILED'
           GROUP BY payment_id) AS r
       ON r.payment_id = p.payment_id
WHERE p.amount_refunded > COALESCE(r.recorded, 0)
ORDER BY p.payment_id;
