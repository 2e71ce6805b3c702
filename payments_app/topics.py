"""Topic declarations. Faust creates only its internal topics, so the app creates its source topic itself."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from payments_app.app import app
from payments_app.local_kafka import parse_broker_url
from payments_app.settings import SETTINGS

TRANSACTIONS_TOPIC = "payments-transactions"

transactions_topic = app.topic(
    TRANSACTIONS_TOPIC,
    key_type=None,
    value_type=bytes,
    value_serializer="raw",
    partitions=SETTINGS.partitions,
)


async def create_topics(broker_url: str = SETTINGS.broker_url, partitions: int = SETTINGS.partitions) -> None:
    """Create the transactions topic with one partition per segment; an existing one is left as it is."""
    admin = AIOKafkaAdminClient(bootstrap_servers=parse_broker_url(broker_url))
    await admin.start()
    try:
        topic = NewTopic(TRANSACTIONS_TOPIC, num_partitions=partitions, replication_factor=SETTINGS.replication_factor)
        await admin.create_topics([topic])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
