"""Topic declarations. Faust creates only topics marked internal, so all are marked so: each worker declares them
at start-up (an existing topic is left as it is), unless PAYMENTS_CREATE_TOPICS is off (`runtime.topic_check`)."""

from __future__ import annotations

from payments_app.service.app import app
from payments_app.settings import SETTINGS
from tables.ledger import LEDGER_CHANGELOG_SUFFIX

TRANSACTIONS_TOPIC = f"{SETTINGS.app_id}-transactions"
LEDGER_CHANGELOG_TOPIC = f"{SETTINGS.app_id}-{LEDGER_CHANGELOG_SUFFIX}"
TOKENS_TOPIC = f"{SETTINGS.app_id}-tokens"
#: every topic's own setting (a worker creates its topics with SETTINGS.replication_factor replicas): a write is
#: acknowledged (the producers' acks=all) once this many replicas have it
REPLICATED_WRITES = {"min.insync.replicas": str(SETTINGS.min_insync_replicas)}

transactions_topic = app.topic(
    TRANSACTIONS_TOPIC,
    key_type=None,
    value_type=bytes,
    value_serializer="raw",
    partitions=SETTINGS.partitions,
    internal=True,
    config=REPLICATED_WRITES,
)

#: the ledger's state, written only inside the ledger's transactions; compacted to the last value of each key
ledger_changelog_topic = app.topic(
    LEDGER_CHANGELOG_TOPIC,
    key_type=None,
    value_type=bytes,
    value_serializer="raw",
    partitions=SETTINGS.partitions,
    internal=True,
    compacting=True,
    config=REPLICATED_WRITES,
)

#: the API's minted tokens (grants, by token id; a revoked one is a tombstone), read whole by every worker
tokens_topic = app.topic(
    TOKENS_TOPIC,
    key_type=None,
    value_type=bytes,
    value_serializer="raw",
    partitions=1,
    internal=True,
    compacting=True,
    config=REPLICATED_WRITES,
)

#: every topic the app uses, with its partition count: what a worker checks when it may not create them
EXPECTED_PARTITIONS = {
    TRANSACTIONS_TOPIC: SETTINGS.partitions,
    LEDGER_CHANGELOG_TOPIC: SETTINGS.partitions,
    TOKENS_TOPIC: 1,
}
