"""What a RocksDB put costs the worker, with the store's options and a few others: the figure behind the Kafka path's
biggest single cost (BENCHMARKS.md, "one Kafka transaction per worker per commit").

A py-spy profile of a worker on the Kafka path puts about a third of its CPU in `PartitionStore.apply`, nearly all
of it inside RocksDB's `write`: the owner's checkpoint and the standby each write a segment entry per changed
segment, a row per transaction and two history lines per transfer. This writes batches of 3,000 such entries
(keys shaped like the store's) into a fresh store per option set and prints, per put, the time inside `write`
and the process's whole CPU (background flushes and compactions included).

    .venv/bin/python -m bench.rocksdb_cost
    .venv/bin/python -m bench.rocksdb_cost --batches 1500 --only "the store's options" "4 MiB write buffer"
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import rocksdict

from tables.ledger import StoreOptions

BATCHES = 300
PUTS_PER_BATCH = 3_000
ACCOUNTS = 100_000
VALUE = b'["t1","transfer",123,"acct1","acct2","applied",null,1700000000000]'

Tweak = Callable[[rocksdict.Options], None]


def vector_memtable(options: rocksdict.Options) -> None:
    """Appends instead of a sorted insert: cheap writes, slow reads (only for a store nobody reads: a standby)."""
    options.set_memtable_factory(rocksdict.MemtableFactory.vector())
    options.set_allow_concurrent_memtable_write(False)


#: (name, a change to the store's options, whether writes go through a write-ahead log as well, whether a batch is
#: put in key order as `PartitionStore.apply` does)
VARIANTS: list[tuple[str, Tweak, bool, bool]] = [
    ("the store's options", lambda options: None, False, True),
    ("batches in arrival order", lambda options: None, False, False),
    ("with a write-ahead log", lambda options: None, True, True),
    ("4 MiB write buffer", lambda options: options.set_write_buffer_size(4 * 2**20), False, True),
    ("64 MiB write buffer", lambda options: options.set_write_buffer_size(64 * 2**20), False, True),
    ("no compression", lambda options: options.set_compression_type(rocksdict.DBCompressionType.none()), False, True),
    ("pipelined write", lambda options: options.set_enable_pipelined_write(True), False, True),
    ("no concurrent memtable write", lambda options: options.set_allow_concurrent_memtable_write(False), False, True),
    ("vector memtable", vector_memtable, False, True),
]


def key(rng: random.Random, batch: int, index: int) -> bytes:
    """Two segments, a transaction row and two history lines in every five puts, as a transfer writes them."""
    kind = index % 5
    if kind < 2:
        return f"3/s/acct{rng.randrange(ACCOUNTS)}/3".encode()
    if kind == 2:
        return f"3/t/tx-{batch}-{index}".encode()
    return f"3/h/acct{rng.randrange(ACCOUNTS)}/{1_700_000_000_000 + batch:013d}/{index}".encode()


def measure(path: Path, tweak: Tweak, logged: bool, in_key_order: bool, batches: int = BATCHES) -> tuple[float, float]:
    """Microseconds per put: inside `write`, and of the process's CPU (sorting and building the batch, flushes and
    compactions included; the keys are made beforehand)."""
    options = StoreOptions().rocksdb()
    tweak(options)
    db = rocksdict.Rdict(str(path), options)
    writes = rocksdict.WriteOptions() if logged else StoreOptions.writes()
    rng = random.Random(1)
    keys = [[key(rng, batch_no, index) for index in range(PUTS_PER_BATCH)] for batch_no in range(batches)]
    in_write = 0.0
    cpu_started = time.process_time()
    for batch_keys in keys:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for batch_key in sorted(batch_keys) if in_key_order else batch_keys:
            batch.put(batch_key, VALUE)
        started = time.perf_counter()
        db.write(batch, writes)
        in_write += time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    db.close()
    puts = batches * PUTS_PER_BATCH
    return 1e6 * in_write / puts, 1e6 * cpu / puts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--batches",
        type=int,
        default=BATCHES,
        help="batches per option set: a store's compactions show only once it holds millions of puts",
    )
    parser.add_argument("--only", nargs="+", help="the option sets to measure (by name); all when left out")
    args = parser.parse_args()
    print(f"{args.batches} batches of {PUTS_PER_BATCH:,} puts per option set")
    with tempfile.TemporaryDirectory(prefix="rocksdb-cost-") as scratch:
        for n, (name, tweak, logged, in_key_order) in enumerate(VARIANTS):
            if args.only and name not in args.only:
                continue
            in_write, cpu = measure(Path(scratch) / f"db-{n}", tweak, logged, in_key_order, args.batches)
            print(f"{name:30s} write() {in_write:.2f} µs/put   process CPU {cpu:.2f} µs/put", flush=True)


if __name__ == "__main__":
    main()
