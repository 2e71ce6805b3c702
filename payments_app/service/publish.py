"""Send commands from outside the ledger agent (account opening, the reconciler) to the transactions topic,
acknowledged."""

from __future__ import annotations

import asyncio

from payments_app.domain.commands import Command
from payments_app.service.topics import transactions_topic
from tables.codec import encode_records


async def send_commands(by_partition: dict[int, list[Command]]) -> None:
    """Return once the broker has every record (acks=all), in order per partition. `force` sends now even inside
    an agent's event, instead of attaching the record to the event's commit."""
    futures = [
        await transactions_topic.send(value=record, partition=partition, force=True)
        for partition, records in encode_records(by_partition).items()
        for record in records
    ]
    await asyncio.gather(*futures)
