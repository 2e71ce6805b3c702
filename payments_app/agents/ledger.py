"""The ledger agent: one per transactions partition, applying each record's batch to that partition's segments."""

from __future__ import annotations

import logging
import os
from collections import defaultdict

import faust
from faust.types import EventT

from payments_app.app import app
from payments_app.codec import decode_batch, decode_entry, encode_batch, encode_entry
from payments_app.domain.commands import Command
from payments_app.domain.ledger import BatchOutcome, BatchState, process_batch
from payments_app.metrics import METRICS
from payments_app.settings import SETTINGS
from payments_app.topics import transactions_topic
from tables.ledger import ledger_table, storage_key

log = logging.getLogger(__name__)


@app.agent(transactions_topic, concurrency=1)
async def apply_transactions(stream: faust.StreamT) -> None:
    """Apply every record in order; table writes are staged by the domain and written once per batch."""
    async for event in stream.events():
        try:
            await apply_record(event)
        except Exception:
            # Never skip past a record we failed to apply: stop the process and let it restart from the last
            # committed offset (Faust's supervisor would restart the agent after the record instead).
            log.critical(
                "could not apply %s[%d]@%d; stopping the worker",
                event.message.topic,
                event.message.partition,
                event.message.offset,
                exc_info=True,
            )
            os._exit(70)


async def apply_record(event: EventT) -> None:
    partition, offset = event.message.partition, event.message.offset
    commands = decode_batch(event.value)
    state = BatchState(lambda key: decode_entry(ledger_table.get(storage_key(partition, key))), offset)
    outcome = process_batch(state, partition, SETTINGS.partitions, offset, commands)
    for key, entry in state.writes():
        ledger_table[storage_key(partition, key)] = encode_entry(entry)
    await ledger_table.changelog_acknowledged()
    await send_relays(outcome.relays)
    count(outcome, len(commands))


async def send_relays(relays: list[tuple[int, Command]]) -> None:
    """Send one record per destination partition and wait for the broker: the next batch may rely on them."""
    by_partition: dict[int, list[Command]] = defaultdict(list)
    for partition, command in relays:
        by_partition[partition].append(command)
    pending = [
        await transactions_topic.send(value=encode_batch(commands), partition=partition, force=True)
        for partition, commands in by_partition.items()
    ]
    for future in pending:
        await future
    METRICS.relays_sent_total += len(relays)


def count(outcome: BatchOutcome, commands: int) -> None:
    METRICS.batches_total += 1
    METRICS.batch_commands_total += commands
    METRICS.batches_replayed_total += int(outcome.replayed)
    METRICS.transactions_applied_total += outcome.applied
    METRICS.transactions_rejected_total += outcome.rejected
    METRICS.transactions_duplicate_total += outcome.duplicates
    METRICS.segment_moves_total += outcome.moves
    METRICS.segment_moved_minor_total += outcome.moved_amount
