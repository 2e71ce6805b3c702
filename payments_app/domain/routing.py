"""Which partition decides a client transaction, in each of the two models the thesis compares.

* `concurrent`: every account has a segment in every partition, so any partition can apply a transfer on its
  own; the transaction id picks the partition, spreading even one account's traffic over all of them.
* `baseline`: an account's money lives in one partition (its home, by account id). A transfer (or a reservation)
  is decided in the payer's home; the payee's credit is relayed to the payee's home.
"""

from __future__ import annotations

from payments_app.domain.commands import ClientTransaction, Reserve, Transfer
from payments_app.domain.money import partition_of

CONCURRENT, BASELINE = "concurrent", "baseline"
MODELS = (CONCURRENT, BASELINE)


def require_model(name: str) -> str:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    return name


def home_of(account: str, partitions: int) -> int:
    """The account's home partition: where the baseline keeps its money and where its creation is decided."""
    return partition_of(account, partitions)


def decided_in(tx: ClientTransaction, partitions: int, model: str) -> int:
    """The partition that decides `tx` and keeps its status."""
    if model == BASELINE:
        return home_of(tx.payer if isinstance(tx, Transfer | Reserve) else tx.account, partitions)
    return partition_of(tx.id, partitions)
