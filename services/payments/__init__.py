"""The payment core: every operation that moves a rider's money, on one skeleton and one state machine.

- `repository`: the payment's columns (written once), its reads and locks, and its transactions.
- `skeleton`: what every money operation does: claim the key (or replay it), record the attempt,
  call the gateway once outside any transaction, record the outcome with its answer and notification.
- `charge`, `holds`, `refunds`: the operations; `reconciliation`: settles what was left PENDING,
  through the same outcome statements.
- `events`: the notifications an outcome writes; `errors`: what the operations refuse with.

Statuses, kinds and transitions are declared in `models.states`.
"""
