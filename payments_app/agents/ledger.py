"""The ledger agent: one per transactions partition, applying each record's batch to that partition's segments."""

from __future__ import annotations

import logging
import os

import faust
from faust.types import EventT

from payments_app.agents.demand import DEMAND
from payments_app.agents.gaps import read_range
from payments_app.app import app
from payments_app.codec import decode_batch, encode_entry
from payments_app.domain.commands import Command
from payments_app.domain.ledger import (
    BatchOutcome,
    BatchState,
    pending_relays,
    process_batch,
)
from payments_app.metrics import METRICS
from payments_app.queries import last_meta, owned_partitions, stored_entry
from payments_app.sending import group_by_partition, send_commands
from payments_app.settings import SETTINGS
from payments_app.topics import transactions_topic
from tables.ledger import ledger_table, storage_key

log = logging.getLogger(__name__)

#: per partition, the consumer generation in which this worker last resent the outbox
OUTBOX_RESENT: dict[int, int] = {}

#: the last offset applied per transactions partition, for the lag gauge
LAST_OFFSETS: dict[int, int] = {}


#: records applied together before their changelog writes and relays are awaited (once for the whole group)
GROUP_RECORDS = int(os.environ.get("PAYMENTS_GROUP_RECORDS", "64"))
#: how long the agent waits for a group to fill before applying what it has
GROUP_WAIT_S = float(os.environ.get("PAYMENTS_GROUP_WAIT_MS", "2")) / 1000


class Group:
    """Records applied one after another whose writes and relays are then awaited once, together.

    Waiting for the broker after every record left the agent idle for a round trip per record, and on a busy
    event loop (the web views share it) far longer, so small records (from the HTTP API) starved. Faust acks
    the group's events only after `finish`, so no offset is committed before its writes are durable.
    """

    def __init__(self) -> None:
        self.relays: list[tuple[int, Command]] = []
        self.unsent_slots: dict[int, int] = {}  # per partition: outbox slots filled in this group
        self.applied: dict[int, int] = {}  # per partition: the last offset applied in this group

    async def finish(self) -> None:
        await ledger_table.changelog_acknowledged()
        await send_commands(group_by_partition(self.relays))
        METRICS.relays_sent_total += len(self.relays)
        LAST_OFFSETS.update(self.applied)


@app.agent(transactions_topic, concurrency=1)
async def apply_transactions(stream: faust.StreamT) -> None:
    """Apply every record in order, a group at a time; table writes are staged by the domain per record."""
    async for events in stream.take_events(GROUP_RECORDS, within=GROUP_WAIT_S):
        group = Group()
        try:
            for event in events:
                await apply_record(event, group)
            await group.finish()
        except Exception:
            # Never skip past a record we failed to apply: stop the process and let it restart from the last
            # committed offset (Faust's supervisor would restart the agent after the record instead).
            log.critical("could not apply a group of %d records; stopping the worker", len(events), exc_info=True)
            os._exit(70)


async def apply_record(event: EventT, group: Group) -> None:
    """Apply one record, after any records Faust skipped before it in the same partition."""
    partition, offset = event.message.partition, event.message.offset
    if not may_apply(partition):
        log.info("partition %d@%d arrived during a rebalance or restore; left for the gap check", partition, offset)
        METRICS.records_deferred_total += 1
        return
    if OUTBOX_RESENT.get(partition) != app.consumer_generation_id:
        await resend_outbox(partition)
        OUTBOX_RESENT[partition] = app.consumer_generation_id
    applied = group.applied[partition] if partition in group.applied else last_applied_offset(partition)
    if offset > applied + 1:
        missing = await read_range(partition, applied + 1, offset)
        log.warning(
            "partition %d: offsets %d..%d were skipped by the consumer; applying %d of them now",
            partition,
            applied + 1,
            offset - 1,
            len(missing),
        )
        METRICS.gap_records_recovered_total += len(missing)
        for missing_offset, value in missing:
            await apply_batch(partition, missing_offset, value, group)
    await apply_batch(partition, offset, event.value, group)


def may_apply(partition: int) -> bool:
    """Only the owner of a partition whose table is fully restored applies its records.

    Faust can hand the agent a prefetched record while a rebalance is under way or while it is still restoring
    that partition's table from the changelog. Applying it then would mix a half-restored state with new
    writes; waiting here would hold up the very fetcher the restore needs. So the record is left alone: the
    owner finds the gap at its next record (or the stall check nudges it) and applies it then, in order.
    """
    return not (app.rebalancing or app.in_recovery) and partition in owned_partitions()


def last_applied_offset(partition: int) -> int:
    meta = last_meta(partition)
    return -1 if meta is None else meta.offset


async def resend_outbox(partition: int) -> None:
    """Send the relays of every unsent outbox slot again on taking a partition over.

    Its previous owner may have died after storing them and before sending them, and the records themselves
    may never be replayed here (Faust can commit past them). Receivers drop relays they already applied.
    """
    meta = last_meta(partition)
    if meta is not None and meta.outbox_slots:
        relays = pending_relays(lambda key: stored_entry(partition, key), meta)
        log.info("partition %d: resending %d relays up to offset %d", partition, len(relays), meta.offset)
        await send_commands(group_by_partition(relays))


async def apply_batch(partition: int, offset: int, value: bytes, group: Group) -> None:
    """Apply one record's commands and write its entries; relays wait for the group to finish."""
    commands = decode_batch(value)
    state = BatchState(lambda key: stored_entry(partition, key), offset)
    unsent = group.unsent_slots.get(partition, 0)
    outcome = process_batch(state, partition, SETTINGS.partitions, offset, commands, SETTINGS.model, unsent)
    await ledger_table.write(partition, [(storage_key(partition, key), encode_entry(e)) for key, e in state.writes()])
    if outcome.outbox_slots is not None:
        group.unsent_slots[partition] = outcome.outbox_slots
    group.relays.extend(outcome.relays)
    group.applied[partition] = state.meta().offset  # the last done record, even when this one was older
    count(outcome, len(commands))
    DEMAND.note(outcome.short_accounts)


def count(outcome: BatchOutcome, commands: int) -> None:
    METRICS.batches_total += 1
    METRICS.batch_commands_total += commands
    METRICS.batches_replayed_total += int(outcome.replayed)
    METRICS.transactions_applied_total += outcome.applied
    METRICS.transactions_rejected_total += outcome.rejected
    METRICS.transactions_duplicate_total += outcome.duplicates
    METRICS.segment_moves_total += outcome.moves
    METRICS.segment_moved_minor_total += outcome.moved_amount
