"""The ledger agent: records of every owned transactions partition, applied a group at a time (runtime.commit)."""

from __future__ import annotations

import logging
import os

import faust

from payments_app.agents.demand import DEMAND
from payments_app.app import app
from payments_app.domain.ledger import BatchOutcome
from payments_app.metrics import METRICS
from payments_app.runtime.commit import Group
from payments_app.runtime.kafka_session import KafkaSession
from payments_app.runtime.wiring import LEDGER, owned_session
from payments_app.settings import SETTINGS
from payments_app.topics import transactions_topic

log = logging.getLogger(__name__)

#: the last offset applied per transactions partition, for the lag gauge and the benchmark's progress
LAST_OFFSETS: dict[int, int] = {}
#: records applied together, then committed once per partition
GROUP_RECORDS = int(os.environ.get("PAYMENTS_GROUP_RECORDS", "64"))
#: how long the agent waits for a group to fill before applying what it has
GROUP_WAIT_S = float(os.environ.get("PAYMENTS_GROUP_WAIT_MS", "2")) / 1000
EXIT_ON_FAILURE = 70


@app.agent(transactions_topic, concurrency=1)
async def apply_transactions(stream: faust.StreamT) -> None:
    """Stage, commit and checkpoint each group; Faust acks the group's events only when this body returns."""
    async for events in stream.take_events(GROUP_RECORDS, within=GROUP_WAIT_S):
        try:
            await LEDGER.close_retired()
            group = Group(SETTINGS.partitions, SETTINGS.model)
            sessions: dict[int, KafkaSession | None] = {}
            for event in events:
                partition = event.message.partition
                if partition not in sessions:
                    sessions[partition] = await owned_session(partition)
                session = sessions[partition]
                if session is None:
                    METRICS.records_not_owned_total += 1  # revoked: its new owner applies it
                    continue
                await group.add(session, event.message.offset, event.value)
            result = await group.commit()
        except Exception:
            # Never ack a record that was not applied: stop, and restart from the committed state.
            log.critical("could not apply a group of %d records; stopping the worker", len(events), exc_info=True)
            os._exit(EXIT_ON_FAILURE)
        for partition in result.fenced:
            log.warning("partition %d: fenced by its new owner; this worker's staged group was dropped", partition)
        METRICS.groups_fenced_total += len(result.fenced)
        for outcomes in result.committed.values():
            count(outcomes)
        for partition, session in sessions.items():
            if session is not None and session.delivered is not None and partition not in result.fenced:
                LAST_OFFSETS[partition] = session.delivered


def count(outcomes: list[BatchOutcome]) -> None:
    for outcome in outcomes:
        METRICS.batches_total += 1
        METRICS.batches_replayed_total += int(outcome.replayed)
        METRICS.relays_sent_total += len(outcome.relays)
        METRICS.transactions_applied_total += outcome.applied
        METRICS.transactions_rejected_total += outcome.rejected
        METRICS.transactions_duplicate_total += outcome.duplicates
        METRICS.segment_moves_total += outcome.moves
        METRICS.segment_moved_minor_total += outcome.moved_amount
        DEMAND.note(outcome.short_accounts)
