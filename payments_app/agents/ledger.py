"""The ledger agent: records of every owned transactions partition, applied a group at a time (runtime.commit)."""

from __future__ import annotations

import logging
import os

import faust

from payments_app.agents.demand import DEMAND
from payments_app.app import app
from payments_app.domain.ledger import BatchOutcome
from payments_app.intake import INTAKE
from payments_app.metrics import METRICS
from payments_app.processes import EXIT_ON_FAILURE
from payments_app.runtime.commit import GroupResult, Pipeline
from payments_app.runtime.wiring import LEDGER, owned_session
from payments_app.settings import SETTINGS
from payments_app.topics import transactions_topic

log = logging.getLogger(__name__)

#: the most records, and client transactions, one group holds (one Kafka transaction); past
#: either the agent waits for the commit (see runtime.commit.Pipeline)
GROUP_RECORDS = int(os.environ.get("PAYMENTS_GROUP_RECORDS", "64"))
GROUP_COMMANDS = int(os.environ.get("PAYMENTS_GROUP_COMMANDS", "1000"))
#: the least time between two commits' starts (`Pipeline`): fewer, fuller Kafka transactions below full load
COMMIT_SPACING_S = float(os.environ.get("PAYMENTS_COMMIT_SPACING_MS", "5")) / 1000


def stop_worker(exc: BaseException) -> None:
    """Never apply past a record that could not be applied or committed: stop, and start again from the
    committed state (the supervisor restarts the worker)."""
    log.critical("could not apply or commit a group of records; stopping the worker", exc_info=exc)
    os._exit(EXIT_ON_FAILURE)


def report(result: GroupResult) -> None:
    for partition in result.fenced:
        log.warning("partition %d: fenced; this worker's staged group was dropped", partition)
    METRICS.groups_fenced_total += len(result.fenced)
    if result.fenced:
        LEDGER.reopen_replaced()
    for outcomes in result.committed.values():
        count(outcomes)
    for partition, records in result.transactions.items():
        INTAKE.decided(partition, records)


PIPELINE = Pipeline(SETTINGS.partitions, SETTINGS.model, report, stop_worker, GROUP_RECORDS, GROUP_COMMANDS,
                    spacing_s=COMMIT_SPACING_S)  # fmt: skip
INTAKE.pipeline = PIPELINE  # client submissions are staged in the same groups as the topic's records
LEDGER.on_committed = report  # a partition's catch-up when it opens is reported like the agent's groups


@app.agent(transactions_topic, concurrency=1)
async def apply_transactions(stream: faust.StreamT) -> None:
    """Stage records into the open group while the previous one commits (group commit, runtime.commit.Pipeline).

    Faust acks a group's events when this body moves on, which can be before their commit: a record acked and
    never committed (the worker died, or was fenced) is applied by whoever opens the partition next, since an
    opening session applies every record below the group's committed offset that its store lacks.
    """
    async for event in stream.events():
        try:
            session = await owned_session(event.message.partition, event.message.offset)
            if session is None:
                METRICS.records_not_owned_total += 1  # revoked: its new owner applies it
                continue
            await PIPELINE.add(session, event.message.offset, event.value, event.message.timestamp)
        except Exception as exc:  # noqa: BLE001 - any failure stops the worker
            stop_worker(exc)


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
