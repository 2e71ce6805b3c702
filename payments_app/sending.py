"""Send commands from outside the ledger agent (web views, reconciler) to the transactions topic, acknowledged."""

from __future__ import annotations

import asyncio

from payments_app.batching import PartitionBatcher
from payments_app.codec import encode_records
from payments_app.domain.commands import Command
from payments_app.settings import SETTINGS
from payments_app.topics import transactions_topic


async def send_commands(by_partition: dict[int, list[Command]]) -> None:
    """Return once the broker has every record (acks=all), in order per partition. `force` sends now even inside
    an agent's event, instead of attaching the record to the event's commit."""
    futures = [
        await transactions_topic.send(value=record, partition=partition, force=True)
        for partition, records in encode_records(by_partition).items()
        for record in records
    ]
    await asyncio.gather(*futures)


#: client submissions from the web views, grouped per partition for a couple of milliseconds
SUBMISSIONS = PartitionBatcher(send_commands, linger_s=SETTINGS.submit_linger_ms / 1000)
