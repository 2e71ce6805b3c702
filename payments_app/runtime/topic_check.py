"""Where the worker may not create topics (Kubernetes: Strimzi does), it checks them before it joins the group.

A missing topic or a partition count other than the configured one would otherwise show up much later and
obscurely: a consumer that waits forever, or segments routed to partitions that do not exist. Fewer replicas than
configured would never show up at all, until the broker holding the only copy is lost.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

UNKNOWN_TOPIC_OR_PARTITION = 3


async def topic_problems(bootstrap: str, expected: dict[str, int], replication_factor: int = 1) -> list[str]:
    """What is wrong with the topics, in words; empty when each exists with its expected partition count and at
    least `replication_factor` replicas of every partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(sorted(expected))
    finally:
        await admin.close()
    problems = []
    for topic in described:
        name, partitions = topic["topic"], len(topic["partitions"])
        if topic["error_code"] == UNKNOWN_TOPIC_OR_PARTITION:
            problems.append(f"topic {name!r} does not exist (it needs {expected[name]} partitions)")
        elif topic["error_code"]:
            problems.append(f"topic {name!r} could not be described (Kafka error code {topic['error_code']})")
        elif partitions != expected[name]:
            problems.append(f"topic {name!r} has {partitions} partitions; this app is configured for {expected[name]}")
        elif (fewest := min(len(p["replicas"]) for p in topic["partitions"])) < replication_factor:
            problems.append(f"topic {name!r} has partitions with {fewest} replicas; this app is configured for "
                            f"{replication_factor}")  # fmt: skip
    return problems
