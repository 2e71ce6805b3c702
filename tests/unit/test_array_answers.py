"""An array of transactions spans partitions whose owners answer apart: one partition refused (backlogged or out of
reach) must not hide what the other owners already sent, and its items say so."""

from __future__ import annotations

import asyncio

import pytest

from payments_app.domain.commands import ClientTransaction, Transfer
from payments_app.service.errors import Backlogged
from payments_app.service.intake import Answer, Verdict
from payments_app.service.owners import Unavailable
from web.views import answers_by_partition, array_item

TRANSFERS: list[ClientTransaction] = [Transfer(f"t{n}", "alice", "bob", 1) for n in range(6)]
BY_PARTITION = {0: [0, 3], 1: [1, 4], 2: [2, 5]}


class Owners:
    """Partition 0 accepts after a pause (its send outlives the refusals), 1 is backlogged, 2 out of reach."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def at_partition(self, partition: int, batch: list[ClientTransaction]) -> list[Answer]:
        if partition == 1:
            raise Backlogged("p1 is backlogged")
        if partition == 2:
            raise Unavailable("p2 has no owner")
        await asyncio.sleep(0.01)
        self.sent += [tx.id for tx in batch]
        return [(Verdict.SUBMITTED, {"id": tx.id, "status": "pending"}) for tx in batch]


async def test_a_refused_partition_answers_its_own_items_and_the_others_are_sent() -> None:
    owners = Owners()
    answers = await answers_by_partition(TRANSFERS, BY_PARTITION, owners.at_partition)
    assert owners.sent == ["t0", "t3"]
    items = [array_item(answer, tx) for answer, tx in zip(answers, TRANSFERS, strict=True)]
    assert [(item["id"], item["status"], item.get("error")) for item in items] == [
        ("t0", "pending", None),
        ("t1", "refused", "backlogged"),
        ("t2", "refused", "unavailable"),
        ("t3", "pending", None),
        ("t4", "refused", "backlogged"),
        ("t5", "refused", "unavailable"),
    ]
    assert items[1]["detail"] == "p1 is backlogged"


async def test_other_failures_are_not_taken_for_refusals() -> None:
    async def broken(partition: int, batch: list[ClientTransaction]) -> list[Answer]:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):  # it reaches the view (a 500), not a quiet item
        await answers_by_partition(TRANSFERS, BY_PARTITION, broken)
