"""Topic declarations. Faust creates only topics marked internal, so both are marked so: each worker declares them
at start-up with one partition per segment (an existing topic is left as it is)."""

from __future__ import annotations

from payments_app.app import app
from payments_app.settings import SETTINGS
from tables.ledger import LEDGER_CHANGELOG_SUFFIX

TRANSACTIONS_TOPIC = f"{SETTINGS.app_id}-transactions"
LEDGER_CHANGELOG_TOPIC = f"{SETTINGS.app_id}-{LEDGER_CHANGELOG_SUFFIX}"

transactions_topic = app.topic(
    TRANSACTIONS_TOPIC,
    key_type=None,
    value_type=bytes,
    value_serializer="raw",
    partitions=SETTINGS.partitions,
    internal=True,
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
)
