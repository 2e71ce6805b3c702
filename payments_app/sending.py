"""Send commands to the transactions topic: one record per destination partition, acknowledged by the broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable

from payments_app.batching import PartitionBatcher
from payments_app.codec import encode_batch
from payments_app.domain.commands import Command
from payments_app.settings import SETTINGS
from payments_app.topics import transactions_topic


def group_by_partition(commands: Iterable[tuple[int, Command]]) -> dict[int, list[Command]]:
    by_partition: dict[int, list[Command]] = defaultdict(list)
    for partition, command in commands:
        by_partition[partition].append(command)
    return by_partition


#: commands per record: a group's relays to one partition can number thousands, and a record must stay well
#: under the producer's 1 MB request limit (a relay is about 120 bytes encoded)
MAX_COMMANDS_PER_RECORD = 2_000


async def send_commands(by_partition: dict[int, list[Command]], allow_empty: bool = False) -> None:
    """Return once the broker has every record (acks=all), in order per partition. `force` sends now even inside
    an agent's event, instead of attaching the record to the event's commit. Empty lists are skipped unless
    `allow_empty`."""
    futures = [
        await transactions_topic.send(value=encode_batch(chunk), partition=partition, force=True)
        for partition, commands in by_partition.items()
        if commands or allow_empty
        for chunk in chunks(commands)
    ]
    await asyncio.gather(*futures)


def chunks(commands: list[Command]) -> list[list[Command]]:
    """Consecutive slices of at most MAX_COMMANDS_PER_RECORD; one empty slice for an empty list."""
    return [commands[i : i + MAX_COMMANDS_PER_RECORD] for i in range(0, len(commands), MAX_COMMANDS_PER_RECORD)] or [[]]


#: client submissions from the web views, grouped per partition for a couple of milliseconds
SUBMISSIONS = PartitionBatcher(send_commands, linger_s=SETTINGS.submit_linger_ms / 1000)
