"""What a Kafka transaction costs the broker, against a plain acknowledged produce: the figure behind the HTTP
path's ceiling (BENCHMARKS.md, "single requests").

A commit is one Kafka transaction per worker for every partition of its group (`runtime.ledger_writer`). On the
Kafka path a transaction holds thousands of transfers; a single-transfer request at a few thousand a second fills a
commit with a handful, and then the transactions are a large part of the broker's work. This
starts a broker of its own (or uses BROKER_URL), sends `--produces` single-message produces (acks=all) from 8
concurrent senders, then `--transactions` one-message transactions from 8 transactional producers, twice (the
first pass warms the broker's JIT), and prints the broker's CPU per request and per transaction.

    .venv/bin/python -m bench.transaction_cost
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import Progress
from devtools.local_kafka import LocalKafka, configured_broker_url
from payments_app.settings import bootstrap_servers

SENDERS = 8


def cpu_s(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return times.user + times.system


async def measure(bootstrap: str, broker: psutil.Process | None, produces: int, transactions: int) -> list[str]:
    progress = Progress("transaction-cost")
    client = psutil.Process()
    topic = f"transaction-cost-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, SENDERS, 1)])
    lines = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    await producer.send_and_wait(topic, b"warm-up", partition=0)

    async def plain(sender: int) -> None:
        for _ in range(produces // SENDERS):
            await producer.send_and_wait(topic, b"x" * 100, partition=sender)

    progress.show(f"{produces:,} acknowledged produces")
    before, started = cpu_s(broker), time.monotonic()
    await asyncio.gather(*(plain(sender) for sender in range(SENDERS)))
    lines.append(f"acknowledged produce of one message: broker {1e6 * (cpu_s(broker) - before) / produces:,.0f} µs "
                 f"of CPU per request ({produces / (time.monotonic() - started):,.0f} requests/s)")  # fmt: skip
    await producer.stop()
    transactional = [AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"cost-{n}", acks="all")
                     for n in range(SENDERS)]  # fmt: skip
    for each in transactional:
        await each.start()

    async def commits(sender: int) -> None:
        for _ in range(transactions // SENDERS):
            async with transactional[sender].transaction():
                await transactional[sender].send(topic, b"x" * 100, partition=sender)

    for label in ("cold", "warm"):
        progress.show(f"{transactions:,} one-message transactions ({label})")
        before, client_before, started = cpu_s(broker), cpu_s(client), time.monotonic()
        await asyncio.gather(*(commits(sender) for sender in range(SENDERS)))
        lines.append(f"one-message transaction ({label}): broker {1e6 * (cpu_s(broker) - before) / transactions:,.0f}"
                     f" µs of CPU per transaction, client (aiokafka) "
                     f"{1e6 * (cpu_s(client) - client_before) / transactions:,.0f} µs "
                     f"({transactions / (time.monotonic() - started):,.0f}/s)")  # fmt: skip
    for each in transactional:
        await each.stop()
    await admin.delete_topics([topic])
    await admin.close()
    progress.done("measured")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--produces", type=int, default=4_000)
    parser.add_argument("--transactions", type=int, default=2_000)
    args = parser.parse_args()
    url = configured_broker_url()
    scratch = Path(tempfile.mkdtemp(prefix="transaction-cost-"))
    kafka = None if url else LocalKafka(scratch / "kafka", heap="1g").start()
    try:
        bootstrap = bootstrap_servers(url or kafka.url)  # type: ignore[union-attr]
        broker = psutil.Process(kafka.pid) if kafka and kafka.pid else None
        for line in asyncio.run(measure(bootstrap, broker, args.produces, args.transactions)):
            print(line)
        if broker is None:
            print("(BROKER_URL is set: the broker's CPU is not visible from here)")
    finally:
        if kafka is not None:
            kafka.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
