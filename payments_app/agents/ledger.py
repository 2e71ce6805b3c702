"""The ledger agent: one per transactions partition, applying each record's batch to that partition's segments."""

from __future__ import annotations

import logging
import os

import faust
from faust.types import EventT

from payments_app.agents.demand import DEMAND
from payments_app.agents.gaps import read_range
from payments_app.app import app
from payments_app.codec import decode_batch, decode_entry, encode_entry
from payments_app.domain.ledger import (
    META_KEY,
    BatchOutcome,
    BatchState,
    PartitionMeta,
    pending_relays,
    process_batch,
)
from payments_app.metrics import METRICS
from payments_app.queries import owned_partitions
from payments_app.sending import group_by_partition, send_commands
from payments_app.settings import SETTINGS
from payments_app.topics import transactions_topic
from tables.ledger import ledger_table, storage_key

log = logging.getLogger(__name__)

#: per partition, the consumer generation in which this worker last resent the outbox
OUTBOX_RESENT: dict[int, int] = {}

#: the last offset applied per transactions partition, for the lag gauge
LAST_OFFSETS: dict[int, int] = {}


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
    """Apply one record, after any records Faust skipped before it in the same partition."""
    partition, offset = event.message.partition, event.message.offset
    if not may_apply(partition):
        log.info("partition %d@%d arrived during a rebalance or restore; left for the gap check", partition, offset)
        METRICS.records_deferred_total += 1
        return
    if OUTBOX_RESENT.get(partition) != app.consumer_generation_id:
        await resend_outbox(partition)
        OUTBOX_RESENT[partition] = app.consumer_generation_id
    applied = last_applied_offset(partition)
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
            await apply_batch(partition, missing_offset, value)
    await apply_batch(partition, offset, event.value)


def may_apply(partition: int) -> bool:
    """Only the owner of a partition whose table is fully restored applies its records.

    Faust can hand the agent a prefetched record while a rebalance is under way or while it is still restoring
    that partition's table from the changelog. Applying it then would mix a half-restored state with new
    writes; waiting here would hold up the very fetcher the restore needs. So the record is left alone: the
    owner finds the gap at its next record (or the stall check nudges it) and applies it then, in order.
    """
    return not (app.rebalancing or app.in_recovery) and partition in owned_partitions()


def last_meta(partition: int) -> PartitionMeta | None:
    entry = decode_entry(ledger_table.read(partition, storage_key(partition, META_KEY)))
    return None if entry is None else PartitionMeta.from_dict(entry["v"])


def last_applied_offset(partition: int) -> int:
    meta = last_meta(partition)
    return -1 if meta is None else meta.offset


async def resend_outbox(partition: int) -> None:
    """Send the last applied record's relays again on taking a partition over.

    Its previous owner may have died after storing them and before sending them, and the record itself may
    never be replayed here (Faust can commit past it). Receivers drop relays they already applied.
    """
    meta = last_meta(partition)
    if meta is not None and meta.outbox:
        log.info("partition %d: resending %d relays of offset %d", partition, len(meta.outbox), meta.offset)
        await send_commands(group_by_partition(pending_relays(meta)))


async def apply_batch(partition: int, offset: int, value: bytes) -> None:
    commands = decode_batch(value)
    state = BatchState(lambda key: decode_entry(ledger_table.read(partition, storage_key(partition, key))), offset)
    outcome = process_batch(state, partition, SETTINGS.partitions, offset, commands, SETTINGS.model)
    await ledger_table.write(partition, [(storage_key(partition, key), encode_entry(e)) for key, e in state.writes()])
    await ledger_table.changelog_acknowledged()
    await send_commands(group_by_partition(outcome.relays))
    METRICS.relays_sent_total += len(outcome.relays)
    count(outcome, len(commands))
    DEMAND.note(outcome.short_accounts)
    LAST_OFFSETS[partition] = offset


def count(outcome: BatchOutcome, commands: int) -> None:
    METRICS.batches_total += 1
    METRICS.batch_commands_total += commands
    METRICS.batches_replayed_total += int(outcome.replayed)
    METRICS.transactions_applied_total += outcome.applied
    METRICS.transactions_rejected_total += outcome.rejected
    METRICS.transactions_duplicate_total += outcome.duplicates
    METRICS.segment_moves_total += outcome.moves
    METRICS.segment_moved_minor_total += outcome.moved_amount
