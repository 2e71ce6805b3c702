"""The ledger runtime attached to the Faust app: its sessions follow the consumer group's assignment."""

from __future__ import annotations

import logging
import os
from typing import Any

import mode
from faust.types import TP

from payments_app.app import app
from payments_app.local_kafka import parse_broker_url
from payments_app.metrics import METRICS
from payments_app.processes import EXIT_ON_FAILURE
from payments_app.runtime.faust_fixes import group_instance_id
from payments_app.runtime.kafka_session import KafkaSession, LedgerTopics
from payments_app.runtime.lease import GROUP_LEASE
from payments_app.runtime.ledger_writer import LedgerWriter
from payments_app.runtime.sessions import LedgerSessions
from payments_app.runtime.topic_check import topic_problems
from payments_app.settings import SETTINGS
from payments_app.topics import (
    EXPECTED_PARTITIONS,
    LEDGER_CHANGELOG_TOPIC,
    TRANSACTIONS_TOPIC,
    ledger_changelog_topic,
)
from tables.ledger import StoreOptions

log = logging.getLogger(__name__)

BOOTSTRAP = parse_broker_url(SETTINGS.broker_url)
LEDGER = LedgerSessions(
    LedgerTopics(SETTINGS.app_id, BOOTSTRAP, TRANSACTIONS_TOPIC, LEDGER_CHANGELOG_TOPIC),
    SETTINGS.data_dir,
    StoreOptions(SETTINGS.rocksdb_block_cache_bytes, SETTINGS.rocksdb_write_buffer_bytes),
    SETTINGS.partitions,
    SETTINGS.model,
    LedgerWriter(
        BOOTSTRAP,
        f"{SETTINGS.app_id}-ledger-{group_instance_id(SETTINGS.web_port)}",
        [LEDGER_CHANGELOG_TOPIC, TRANSACTIONS_TOPIC],
        SETTINGS.transaction_timeout_s,
    ),
)


def ledger_partitions(tps: set[TP]) -> set[int]:
    return {tp.partition for tp in tps if tp.topic == TRANSACTIONS_TOPIC}


def owned_partitions() -> set[int]:
    """Partitions of the transactions topic (and so of the ledger) the group assigned to this worker now."""
    return ledger_partitions(app.assignor.assigned_actives())


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
    LEDGER.revoke(ledger_partitions(revoked))


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
        problems = await topic_problems(parse_broker_url(SETTINGS.broker_url), EXPECTED_PARTITIONS)
        if problems:
            log.critical("the topics are not as this app is configured: %s", "; ".join(problems))
            os._exit(EXIT_ON_FAILURE)


app.service(TopicCheck)
