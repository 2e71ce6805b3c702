"""Topic declarations. Faust creates only topics marked internal, so the transactions topic is marked so: each
worker declares it at start-up with one partition per segment (an existing topic is left as it is)."""

from __future__ import annotations

from payments_app.app import app
from payments_app.settings import SETTINGS

TRANSACTIONS_TOPIC = f"{SETTINGS.app_id}-transactions"

transactions_topic = app.topic(
    TRANSACTIONS_TOPIC,
    key_type=None,
    value_type=bytes,
    value_serializer="raw",
    partitions=SETTINGS.partitions,
    internal=True,
)
