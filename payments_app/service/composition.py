"""The composition root of the ledger: this worker's sessions, commit pipeline, intake and local reads, built once
here from the settings, with the callbacks that tie them together; and the Faust signals that drive them.

Everything else (the agents, the web views) uses the objects built here and builds none of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mode
from faust.types import TP

from payments_app.domain.ledger import BatchOutcome
from payments_app.exits import stop_worker
from payments_app.runtime.commit import GroupResult, Pipeline
from payments_app.runtime.kafka_session import KafkaSession, LedgerTopics, LogReader
from payments_app.runtime.ledger_writer import LedgerWriter
from payments_app.runtime.metrics import METRICS
from payments_app.runtime.sessions import LedgerSessions
from payments_app.runtime.standby import StandbyFollower
from payments_app.runtime.topic_check import topic_problems
from payments_app.service.app import GROUP_LEASE, app
from payments_app.service.demand import DEMAND
from payments_app.service.intake import Intake
from payments_app.service.queries import LocalReads
from payments_app.service.topics import (
    EXPECTED_PARTITIONS,
    LEDGER_CHANGELOG_TOPIC,
    TRANSACTIONS_TOPIC,
    ledger_changelog_topic,
)
from payments_app.settings import SETTINGS, Settings
from tables.codec import store_entries
from tables.ledger import LedgerStores, StoreOptions


def ledger_partitions(tps: set[TP]) -> set[int]:
    return {tp.partition for tp in tps if tp.topic == TRANSACTIONS_TOPIC}


def owned_partitions() -> set[int]:
    """Partitions of the transactions topic (and so of the ledger) the group assigned to this worker now."""
    return ledger_partitions(app.assignor.assigned_actives())


def build_sessions(
    settings: Settings, on_committed: Callable[[GroupResult], None], on_failed: Callable[[BaseException], None]
) -> LedgerSessions:
    bootstrap = settings.bootstrap_servers
    writer = LedgerWriter(
        bootstrap,
        f"{settings.app_id}-ledger-{settings.instance_id}",
        [LEDGER_CHANGELOG_TOPIC, TRANSACTIONS_TOPIC],
        settings.transaction_timeout_s,
    )
    stores = LedgerStores(
        settings.data_dir / "ledger",
        StoreOptions(settings.rocksdb_block_cache_bytes, settings.rocksdb_write_buffer_bytes),
        store_entries,
    )
    return LedgerSessions(
        LedgerTopics(settings.app_id, bootstrap, TRANSACTIONS_TOPIC, LEDGER_CHANGELOG_TOPIC),
        stores,
        StandbyFollower(bootstrap, LEDGER_CHANGELOG_TOPIC, stores),
        lambda: LogReader(bootstrap, settings.app_id),
        settings.partitions,
        settings.model,
        writer,
        on_committed,
        on_failed,
    )


def failed(exc: BaseException) -> None:
    """The one failure policy: a group that could not be staged or committed, or a partition that could not be
    opened, stops the worker before anything more is written; it starts again from its committed state (the
    supervisor restarts it)."""
    stop_worker("could not open a partition, or apply or commit a group of records", exc)


def committed(result: GroupResult) -> None:
    """A group's result, from the agent's pipeline or from a partition's catch-up as it opens: counted, the
    clients waiting for its transactions answered, and fenced partitions reopened if they are still ours."""
    METRICS.groups_fenced_total += len(result.fenced)
    if result.fenced:
        LEDGER.reopen_replaced()
    for outcomes in result.committed.values():
        count(outcomes)
    for partition, records in result.transactions.items():
        INTAKE.decided(partition, records)


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


LEDGER = build_sessions(SETTINGS, committed, failed)
PIPELINE = Pipeline(
    SETTINGS.partitions, SETTINGS.model, committed, failed, SETTINGS.group_records, SETTINGS.group_commands,
    spacing_s=SETTINGS.commit_spacing_s,
)  # fmt: skip
READS = LocalReads(LEDGER, GROUP_LEASE, owned_partitions, lambda: bool(app.rebalancing))
INTAKE = Intake(PIPELINE, LEDGER.opened, READS.stored_value, SETTINGS.max_waiting)


async def owned_session(partition: int, offset: int) -> KafkaSession | None:
    """The session of a partition assigned here (None if it is not), for the record at `offset`. Faust can hand
    the agent a partition's records before it announces the assignment (`on_partitions_assigned`); the session is
    then opened now."""
    if partition not in LEDGER.assigned() and partition in owned_partitions() and GROUP_LEASE.member is not None:
        LEDGER.assign({partition}, GROUP_LEASE.member)
    LEDGER.handing(partition, offset)
    return await LEDGER.session(partition)


@app.on_partitions_revoked.connect
async def retire_sessions(sender: Any, revoked: set[TP], **_: Any) -> None:
    """Partitions that left: their sessions retire, and the clients waiting there are answered by the new owner."""
    partitions = ledger_partitions(revoked)
    LEDGER.revoke(partitions)
    INTAKE.release(partitions)


@app.on_partitions_assigned.connect
async def open_sessions(sender: Any, assigned: set[TP], **_: Any) -> None:
    """Faust's assignment is the whole new one: partitions no longer in it are retired, new ones opened."""
    owned = ledger_partitions(assigned)
    METRICS.rebalances_total += 1
    LEDGER.revoke(LEDGER.assigned() - owned)
    await ledger_changelog_topic.maybe_declare()
    if GROUP_LEASE.member is None:
        raise RuntimeError("an assignment announced before its join completed")
    LEDGER.assign(owned, GROUP_LEASE.member)


@app.on_before_shutdown.connect
async def close_sessions(sender: Any, **_: Any) -> None:
    await LEDGER.stop()


class TopicCheck(mode.Service):
    """Where the worker may not create topics, it stops at start, saying why, if one is missing or mis-sized."""

    async def on_start(self) -> None:
        if SETTINGS.create_topics:
            return
        problems = await topic_problems(SETTINGS.bootstrap_servers, EXPECTED_PARTITIONS, SETTINGS.replication_factor)
        if problems:
            stop_worker(f"the topics are not as this app is configured: {'; '.join(problems)}")


app.service(TopicCheck)
