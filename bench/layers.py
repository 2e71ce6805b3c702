"""Per-layer ceilings: how fast each layer under one ledger agent goes alone, on one core.

The issue asks the Concurrent model for 200,000 applied transfers/s on a 2-core machine. The full pipeline
(broker, workers and load generator sharing both cores) does far less, and its number alone does not say why.
This measures, one at a time and in this process only, what one ledger agent stacks up for its partition,
on the benchmark's own workload (uniform transfers, seed 1, 500 per record, every segment funded):

1. `domain`: `process_batch` over decoded entries in a dict: the money rules alone, with the partition's state
   kept as objects across records, as the worker keeps it.
2. `domain+codec`: records arrive as bytes and entries are orjson bytes under storage keys, as in the worker.
3. `domain+codec+rocksdb`: the entries live in a ledger `PartitionStore` (RocksDB with the worker's options),
   read with `get`, written with one atomic write batch and checkpoint per record.
4. `kafka-produce`: the changelog messages those transfers make (one per record: a commit packs a
   partition's store entries into one, `tables.codec.commit_records`), sent by an
   aiokafka producer with the worker's settings, through its batch API as a commit sends them
   (`send_in_batches`), acknowledgements awaited after each record as the agent does.
5. `kafka-consume`: the same messages read back by a plain aiokafka consumer (what a restore reads).

Layers 1-3 each add work to the one before; 4-5 are the Kafka client's share, plus the broker's CPU when the
broker is ours. Results: `layers.json`, `layers.png` and a markdown table.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from itertools import cycle, islice
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import Progress, RunSettings, TransferSource, funding, machine
from devtools.local_kafka import LocalKafka, configured_broker_url
from payments_app.domain.commands import Command, OpenAccount, Transfer
from payments_app.domain.ledger import PartitionState, Writes, process_batch, transaction_key
from payments_app.domain.routing import CONCURRENT
from payments_app.runtime.commit import encode_writes
from payments_app.runtime.ledger_writer import send_in_batches
from payments_app.settings import bootstrap_servers
from tables.codec import decode_batch, decode_entry, encode_batch
from tables.ledger import PartitionStore, StoreOptions, storage_key

PARTITIONS = RunSettings.partitions
PARTITION = 0  # one partition of the benchmark's 8: what one ledger agent applies
TARGET_TPS = 200_000  # the goal for the Concurrent model on this machine
SEED_CHUNK = 2_000  # commands per record when opening and funding, as the benchmark does
PROGRESS_EVERY = 10  # records between progress lines
STALL_S = 60.0
NOTES = {
    "domain": "process_batch over decoded entries in a dict",
    "domain+codec": "+ decode the record, decode each entry read, encode each entry written (orjson)",
    "domain+codec+rocksdb": "+ RocksDB get per entry read, one write batch per record",
    "kafka-produce": "aiokafka producer's batch API as a commit uses it, acks=all, linger 1 ms: {per:.4f} messages per "
    "transfer, of ~{size:,.0f} B each, acks awaited every {every} record(s)",
    "kafka-consume": "aiokafka consumer reading those messages back",
}

Entries = list[tuple[bytes, bytes]]
Record = TypeVar("Record")


@dataclass
class LayerResult:
    """One layer's run. `messages` are the changelog entries those transfers make (written, sent or read)."""

    layer: str
    transfers: int
    messages: int
    seconds: float
    cpu_s: float
    gc_s: float  # wall time in the cyclic garbage collector (part of `seconds`)
    transfers_per_s: float
    messages_per_s: float
    us_per_transfer: float  # wall clock
    cpu_us_per_transfer: float  # this process's CPU, all its threads (RocksDB's background work included)
    broker_cpu_s: float | None  # Kafka layers on a broker we started; None otherwise
    load_before: float  # 1-minute load average when the layer started: other work competing for the cores
    note: str


class Stopwatch:
    """Wall clock, this process's CPU, its garbage collector and, when known, the broker's CPU, while entered.

    On entering, everything that exists (the layer's input, its seeded state, the imported libraries) is frozen
    out of the cyclic garbage collector, so the collector walks only what the layer itself creates. Left alone
    it walks the whole heap at every full collection, which would charge a layer for this benchmark's own
    pre-built input; a worker pays that for its own heap, and `gc_s` shows how large the collector's share is.
    """

    def __init__(self, broker_pid: int | None = None) -> None:
        self.broker = psutil.Process(broker_pid) if broker_pid else None
        self.gc_s = 0.0
        self.gc_started = 0.0

    def __enter__(self) -> Stopwatch:
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._on_gc)
        self.load = os.getloadavg()[0]
        self.broker_cpu = self._broker_cpu()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.gc_started = time.perf_counter()
        else:
            self.gc_s += time.perf_counter() - self.gc_started

    def _broker_cpu(self) -> float:
        if self.broker is None:
            return 0.0
        times = self.broker.cpu_times()
        return times.user + times.system

    def rate(self, records: int) -> str:
        return f"{records / (time.perf_counter() - self.wall):,.1f} records/s"

    def result(self, layer: str, transfers: int, messages: int, note: str) -> LayerResult:
        seconds = time.perf_counter() - self.wall
        cpu_s = time.process_time() - self.cpu
        return LayerResult(
            layer=layer, transfers=transfers, messages=messages, seconds=round(seconds, 3), cpu_s=round(cpu_s, 3),
            gc_s=round(self.gc_s, 3), transfers_per_s=round(transfers / seconds, 1),
            messages_per_s=round(messages / seconds, 1), us_per_transfer=round(1e6 * seconds / transfers, 2),
            cpu_us_per_transfer=round(1e6 * cpu_s / transfers, 2),
            broker_cpu_s=round(self._broker_cpu() - self.broker_cpu, 2) if self.broker else None,
            load_before=round(self.load, 2), note=note,
        )  # fmt: skip


class Store(Protocol):
    def load(self, key: str) -> Any: ...

    def write(self, writes: Writes) -> int:
        """Keep the changes; the number of changelog messages they make."""
        ...


class MemoryStore:
    """Layer 1: decoded entries in a dict, keyed by ledger key."""

    def __init__(self) -> None:
        self.entries: dict[str, Any] = {}

    def load(self, key: str) -> Any:
        return self.entries.get(key)

    def write(self, writes: Writes) -> int:
        self.entries.update(writes.entries)
        self.entries.update((transaction_key(record.id), record.to_row()) for record in writes.transactions)
        return 1 if writes.entries or writes.transactions else 0


class EncodedStore:
    """Layers 2-3: entries encoded as a commit encodes them, under the worker's storage keys, in whatever `get`
    and `put` reach."""

    def __init__(self, get: Callable[[bytes], bytes | None], put: Callable[[Entries], None]) -> None:
        self.get = get
        self.put = put
        self.last_written: Entries = []  # the last record's changelog messages: the producer layer's sample

    def load(self, key: str) -> Any:
        return decode_entry(self.get(storage_key(PARTITION, key)))

    def write(self, writes: Writes) -> int:
        self.last_written, stored = encode_writes(PARTITION, writes)
        self.put(stored)
        return len(self.last_written)


def write_batch(store: PartitionStore, entries: Entries) -> None:
    """One atomic RocksDB write per record, with the checkpoint moved past its entries, as a commit does."""
    store.apply(entries, store.checkpoint + len(entries))


@dataclass
class Workload:
    """The records one partition receives: opening and funding first, then the transfers."""

    seed: list[list[Command]]
    transfers: list[list[Transfer]]
    encoded: list[bytes]

    @property
    def count(self) -> int:
        return sum(len(batch) for batch in self.transfers)


def build_workload(transfers: int, accounts: int, progress: Progress) -> Workload:
    """The benchmark's transfers for partition PARTITION, in its batches; accounts funded in every segment."""
    settings = RunSettings(accounts=accounts)
    names = [f"acct-{n}" for n in range(accounts)]
    opens: list[Command] = [OpenAccount(name, "bench") for name in names]
    deposits: list[Command] = list(funding(settings, names)[PARTITION])
    seed = [opens[i : i + SEED_CHUNK] for i in range(0, len(opens), SEED_CHUNK)]
    seed += [deposits[i : i + SEED_CHUNK] for i in range(0, len(deposits), SEED_CHUNK)]
    source = TransferSource(settings, names)
    records = max(1, round(transfers / settings.batch_size))
    batches: list[list[Transfer]] = []
    while len(batches) < records:
        partition, batch = source.next_batch(settings.batch_size)
        if partition == PARTITION:
            batches.append(batch)
            progress.show(f"generating transfers {len(batches) * settings.batch_size:,}")
    return Workload(seed, batches, [encode_batch(batch) for batch in batches])


def apply_records(
    store: Store,
    records: Sequence[Record],
    decode: Callable[[Record], Sequence[Command]],
    first_offset: int,
    show: Callable[[int], None],
) -> tuple[list[int], int]:
    """Apply each record as the ledger agent does, into one state kept across records (a group of one record
    each); return the entries (changelog messages) each one wrote, and how many transactions were applied."""
    written = []
    applied = 0
    state = PartitionState(store.load)
    for offset, record in enumerate(records, start=first_offset):
        applied += process_batch(state, PARTITION, PARTITIONS, offset, decode(record), CONCURRENT).applied
        written.append(store.write(state.take_writes()))
        if len(written) % PROGRESS_EVERY == 0:
            show(len(written))
    return written, applied


def measure_store(
    layer: str,
    store: Store,
    records: Sequence[Record],
    decode: Callable[[Record], Sequence[Command]],
    workload: Workload,
    progress: Progress,
) -> tuple[LayerResult, list[int]]:
    """Open and fund the accounts in the store (not timed), then time the transfers."""
    seeds = len(workload.seed)
    apply_records(store, workload.seed, list, 0, lambda n: progress.show(f"{layer}: opening and funding {n}/{seeds}"))
    total = len(records)
    with Stopwatch() as watch:
        written, applied = apply_records(
            store, records, decode, seeds, lambda n: progress.show(f"{layer}: record {n}/{total}, {watch.rate(n)}")
        )
        result = watch.result(layer, workload.count, sum(written), NOTES[layer])
    if applied != workload.count:
        raise RuntimeError(f"{layer}: only {applied} of {workload.count} transfers applied: some parked or failed")
    progress.done(f"{layer}: {result.transfers_per_s:,.0f} transfers/s, {result.cpu_us_per_transfer} CPU µs each")
    return result, written


async def measure_layers(
    scratch: Path,
    transfers: int = 200_000,
    include_kafka: bool = True,
    *,
    broker_url: str | None = None,
    accounts: int = RunSettings.accounts,
    ack_every: int = 1,
) -> list[LayerResult]:
    """Measure every layer alone on `transfers` transfers (rounded to whole records of 500).

    The Kafka layers use `broker_url`, else BROKER_URL, else a broker of our own started in `scratch`; the
    producer waits for acknowledgements after every `ack_every` records, as an agent applying records in groups
    of that size does.
    """
    progress = Progress("layers")
    workload = build_workload(transfers, accounts, progress)
    results = [measure_store("domain", MemoryStore(), workload.transfers, list, workload, progress)[0]]
    data: dict[bytes, bytes] = {}
    in_memory = EncodedStore(data.get, data.update)
    results.append(measure_store("domain+codec", in_memory, workload.encoded, decode_batch, workload, progress)[0])
    data.clear()  # its memory back before the next layer
    scratch.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="layers-rocksdb-", dir=scratch))
    db = PartitionStore(folder / "partition", StoreOptions())
    try:
        rocks = EncodedStore(db.get, partial(write_batch, db))
        result, written = measure_store(
            "domain+codec+rocksdb", rocks, workload.encoded, decode_batch, workload, progress
        )
        results.append(result)
    finally:
        db.close()
        shutil.rmtree(folder)
    if not include_kafka:
        return results
    url = broker_url or configured_broker_url()
    kafka: LocalKafka | None = None
    if url is None:
        kafka = LocalKafka(scratch / "layers-kafka", heap="1g")
        progress.show("starting a local Kafka broker")
        await asyncio.to_thread(kafka.start)
        url = kafka.url
    try:
        changelog = Changelog(bootstrap_servers(url), written, rocks.last_written, workload.count, ack_every, progress)
        results.extend(await changelog.measure(kafka.pid if kafka else None))
    finally:
        if kafka is not None:
            kafka.stop()
    return results


class Changelog:
    """Layers 4-5: the changelog messages of the measured transfers, through a fresh one-partition topic."""

    def __init__(
        self, bootstrap: str, written: list[int], sample: Entries, transfers: int, ack_every: int, progress: Progress
    ) -> None:
        self.bootstrap = bootstrap
        self.written = written  # messages per record, as layer 3 wrote them
        self.sample = sample  # real messages (layer 3's last record), sent round-robin
        self.transfers = transfers
        self.ack_every = ack_every
        self.progress = progress
        self.topic = f"layers-{uuid.uuid4().hex[:8]}"
        self.messages = sum(written)

    async def measure(self, broker_pid: int | None) -> list[LayerResult]:
        """Produce, then consume, on a topic made for this run and deleted after it."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            # the default (delete) policy, not the changelog's compaction, so that every message is read back
            await admin.create_topics([NewTopic(self.topic, 1, 1)])
            try:
                return [await self.produce(broker_pid), await self.consume(broker_pid)]
            finally:
                await admin.delete_topics([self.topic])
        finally:
            await admin.close()

    async def produce(self, broker_pid: int | None) -> LayerResult:
        """Send each record's messages in batches, as a commit does; every `ack_every` records wait for their
        acknowledgements, as the agent does."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=1)
        await producer.start()
        messages = cycle(self.sample)
        size = sum(len(key) + len(value) for key, value in self.sample) / len(self.sample)
        note = NOTES["kafka-produce"].format(per=self.messages / self.transfers, size=size, every=self.ack_every)
        sent: list[asyncio.Future[Any]] = []
        try:
            with Stopwatch(broker_pid) as watch:
                for n, count in enumerate(self.written, start=1):
                    await send_in_batches(producer, self.topic, 0, islice(messages, count), sent)
                    if n % self.ack_every == 0 or n == len(self.written):
                        await sent[-1]  # acknowledgements come in order: the last one means all are in
                        for future in sent:
                            future.result()  # a failed send raises here
                        sent.clear()
                    if n % PROGRESS_EVERY == 0:
                        self.progress.show(f"kafka-produce: record {n}/{len(self.written)}, {watch.rate(n)}")
                result = watch.result("kafka-produce", self.transfers, self.messages, note)
        finally:
            await producer.stop()
        self.progress.done(f"kafka-produce: {result.messages_per_s:,.0f} messages/s, "
                           f"{result.transfers_per_s:,.0f} transfers/s implied")  # fmt: skip
        return result

    async def consume(self, broker_pid: int | None) -> LayerResult:
        """Read every message back from the start of the topic."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        partition = TopicPartition(self.topic, 0)
        try:
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            with Stopwatch(broker_pid) as watch:
                read, last_read_at = 0, time.monotonic()
                while read < self.messages:
                    got = len((await consumer.getmany(partition, timeout_ms=1_000)).get(partition, []))
                    if got:
                        read, last_read_at = read + got, time.monotonic()
                    elif time.monotonic() - last_read_at > STALL_S:
                        raise TimeoutError(f"kafka-consume: stuck at {read} of {self.messages} messages")
                    self.progress.show(f"kafka-consume: {read:,}/{self.messages:,} messages")
                result = watch.result("kafka-consume", self.transfers, read, NOTES["kafka-consume"])
        finally:
            await consumer.stop()
        self.progress.done(f"kafka-consume: {result.messages_per_s:,.0f} messages/s, "
                           f"{result.transfers_per_s:,.0f} transfers/s implied")  # fmt: skip
        return result


def write_results(results: list[LayerResult], directory: Path, pipeline: Mapping[str, float] | None = None) -> None:
    """`layers.json` (one row per layer, with the machine) and `layers.png`.

    `pipeline` adds bars for full-pipeline runs measured elsewhere, e.g. {"pipeline, 1 worker": 16_000}.
    """
    directory.mkdir(parents=True, exist_ok=True)
    info = machine()
    rows = [{**asdict(result), "machine": info} for result in results]
    (directory / "layers.json").write_text(json.dumps(rows, indent=1) + "\n")
    write_plot(results, pipeline or {}, directory / "layers.png")


def write_plot(results: list[LayerResult], pipeline: Mapping[str, float], path: Path) -> None:
    """Horizontal bars of transfers/s on a log axis, the layers above the full pipeline, the target marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [result.layer for result in results] + list(pipeline)
    values = [result.transfers_per_s for result in results] + list(pipeline.values())
    colors = ["tab:blue"] * len(results) + ["tab:orange"] * len(pipeline)
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.45 * len(labels)))
    bars = ax.barh(labels, values, color=colors)
    texts = [f"{r.transfers_per_s:,.0f}" + (f"  ({r.gc_s / r.seconds:.0%} in GC)" if r.gc_s > 0.05 * r.seconds else "")
             for r in results] + [f"{value:,.0f}" for value in pipeline.values()]  # fmt: skip
    ax.bar_label(bars, labels=texts, padding=3, fontsize=8)
    ax.axvline(TARGET_TPS, color="tab:red", linestyle="--", label=f"target {TARGET_TPS:,}/s")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(min(values) / 2, max([*values, TARGET_TPS]) * 5)
    ax.set_xlabel("transfers/s (log scale); Kafka layers: implied by the changelog messages a transfer makes")
    ax.set_title("each layer alone on one core (blue) and the full pipeline (orange)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(results: list[LayerResult]) -> str:
    """The table for BENCHMARKS.md, and where one worker's CPU goes per transfer."""
    lines = [
        "| layer | transfers | s | transfers/s | µs/transfer | CPU s | CPU µs/transfer | GC s | messages/s "
        "| broker CPU s | load | what it adds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        broker = "" if r.broker_cpu_s is None else f"{r.broker_cpu_s:.1f}"
        lines.append(
            f"| {r.layer} | {r.transfers:,} | {r.seconds:.2f} | {r.transfers_per_s:,.0f} | {r.us_per_transfer:.1f} "
            f"| {r.cpu_s:.2f} | {r.cpu_us_per_transfer:.1f} | {r.gc_s:.2f} | {r.messages_per_s:,.0f} | {broker} "
            f"| {r.load_before} | {r.note} |"
        )
    return "\n".join([*lines, "", where_the_time_goes(results)])


def where_the_time_goes(results: list[LayerResult]) -> str:
    """One worker's CPU per transfer, layer by layer with the collector apart, and the ceiling it sets on a core.

    Each layer's own work is its CPU less its time in the garbage collector; the collector's share is layer 3's
    (the worker's shape: entries as bytes). Layer 1's collector time is about its store of decoded entries,
    which no worker holds.
    """
    layer = {r.layer: r for r in results}
    work = {r.layer: 1e6 * (r.cpu_s - r.gc_s) / r.transfers for r in results}
    rocksdb = layer["domain+codec+rocksdb"]
    parts = [("rules", work["domain"]), ("codec", work["domain+codec"] - work["domain"]),
             ("RocksDB", work["domain+codec+rocksdb"] - work["domain+codec"]),
             ("garbage collector", 1e6 * rocksdb.gc_s / rocksdb.transfers)]  # fmt: skip
    produce = layer.get("kafka-produce")
    parts += [("changelog producer", produce.cpu_us_per_transfer)] if produce else []
    total = sum(us for _, us in parts)
    text = (f"CPU µs per transfer in one worker: {' + '.join(f'{name} {us:.1f}' for name, us in parts)} = {total:.1f}, "
            f"so one core applies at most ~{1e6 / total:,.0f} transfers/s before Faust's own overhead")  # fmt: skip
    if produce and produce.broker_cpu_s:
        us = 1e6 * produce.broker_cpu_s / produce.transfers
        text += (
            f"; taking the changelog costs the broker {us:.1f} µs more (at most ~{1e6 / us:,.0f} transfers/s a core)"
        )
    return text + "."
