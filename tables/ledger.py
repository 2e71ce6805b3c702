"""The ledger's local state: one RocksDB per partition, holding a committed prefix of that partition's changelog.

Keys are `"{partition}/{ledger key}"`, the same bytes as the changelog's keys, so an entry names the partition
that owns it. Every write carries the changelog offset it reflects (the checkpoint, stored in the same atomic
write batch), so after any stop, clean or not, the store says exactly where its restore has to resume.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import rocksdict

from payments_app.domain.checks import InvariantViolation, require

#: the changelog topic is `{app id}-{LEDGER_CHANGELOG_SUFFIX}`: compacted, one partition per ledger partition
LEDGER_CHANGELOG_SUFFIX = "ledger-changelog-v4"
#: not a ledger key (those start with a digit): the changelog offset the store reflects, as ASCII digits
CHECKPOINT_KEY = b"#checkpoint"
NOTHING_APPLIED = -1
log = logging.getLogger(__name__)

#: what one changelog record `(key, value)` becomes in a store; the ledger's records each carry a commit's store
#: entries, packed (`tables.codec.store_entries`)
Expand = Callable[[bytes, bytes], Iterable[tuple[bytes, bytes]]]


def as_is(key: bytes, value: bytes) -> Iterable[tuple[bytes, bytes]]:
    return ((key, value),)


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """RocksDB's settings for a partition store.

    No write-ahead log: the changelog is the log. A store that was not closed (a crash) reopens as of its last
    flushed memtable, which is still a committed prefix with its own checkpoint (a write batch never spans two
    memtables), and the restore replays the changelog from there; a closed store flushed everything. Kafka
    Streams runs its RocksDB stores the same way. Without the log a put costs about a tenth less CPU
    (`bench.rocksdb_cost`), and a transfer makes about ten of them.
    """

    block_cache_bytes: int = 16 * 2**20
    write_buffer_bytes: int = 16 * 2**20

    def rocksdb(self) -> rocksdict.Options:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(self.write_buffer_bytes)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(self.block_cache_bytes))
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        return options

    @staticmethod
    def writes() -> rocksdict.WriteOptions:
        write_options = rocksdict.WriteOptions()
        write_options.disable_wal = True
        return write_options


class PartitionStore:
    """One partition's entries and the changelog offset they reflect; written only with committed changes."""

    def __init__(self, path: Path, options: StoreOptions, expand: Expand = as_is) -> None:
        self.path = path
        self._options = options
        self._expand = expand
        self._writes = options.writes()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()
        raw = self._db.get(CHECKPOINT_KEY)
        self.checkpoint = NOTHING_APPLIED if raw is None else int(raw)

    def _open(self) -> rocksdict.Rdict:
        return rocksdict.Rdict(str(self.path), self._options.rocksdb())

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def scan_back(self, prefix: bytes, before: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` entries under `prefix`, last key first, each with a key below `prefix + before`."""
        iterator = self._db.iter()
        start = prefix + (before if before is not None else b"\xff")
        iterator.seek_for_prev(start)
        if iterator.valid() and iterator.key() == start:
            iterator.prev()
        found: list[tuple[bytes, bytes]] = []
        while len(found) < limit and iterator.valid() and iterator.key().startswith(prefix):
            found.append((iterator.key(), iterator.value()))
            iterator.prev()
        return found

    def view(self) -> StoreView:
        """The store as it is now, unchanged by later writes: for reads that yield to the event loop midway."""
        return StoreView(self._db.iter())

    def apply(self, entries: Iterable[tuple[bytes, bytes]], changelog_offset: int) -> None:
        """Store committed entries and the changelog offset of the last of them, in one atomic write; an entry
        with an empty value removes its key."""
        require(
            changelog_offset > self.checkpoint,
            f"{self.path}: changelog offset {changelog_offset} is not past the checkpoint {self.checkpoint}",
        )
        batch = rocksdict.WriteBatch(raw_mode=True)
        # about five per transfer, in the owner's store and the standby's; in key order, each insert finds the
        # memtable's path of the one before in the cache: a fifth less CPU per put, the sort included
        # (`bench.rocksdb_cost`); the sort is stable, so of two writes of one key the last still wins
        for key, value in sorted(entries, key=itemgetter(0)):
            if key == CHECKPOINT_KEY:
                raise InvariantViolation("a ledger entry cannot use the checkpoint key")
            if value:
                batch.put(key, value)
            else:  # `codec.DELETED`: a resolved reservation's expiry entry
                batch.delete(key)
        batch.put(CHECKPOINT_KEY, str(changelog_offset).encode())
        self._db.write(batch, self._writes)
        self.checkpoint = changelog_offset

    def apply_log(self, records: Sequence[tuple[int, bytes, bytes]]) -> int:
        """Apply changelog records `(offset, key, value)` in offset order, skipping those the store already has
        (a restore and a standby follower may both have read them). Returns how many were applied.

        Only the last value of each key is written: the store holds the state at the last offset, and a busy
        account's segment appears in most commits."""
        checkpoint, expand = self.checkpoint, self._expand
        fresh: dict[bytes, bytes] = {}
        applied = 0
        for offset, key, value in records:
            if offset > checkpoint:
                fresh.update(expand(key, value))
                applied += 1
        if fresh:
            self.apply(fresh.items(), records[-1][0])
        return applied

    def discard_if_ahead(self, log_end: int) -> None:
        """Wipe a store whose checkpoint is at or past the changelog's end: it belongs to another history (the
        topic was recreated)."""
        if self.checkpoint < log_end:
            return
        log.warning("%s: local checkpoint %d is past the changelog's end %d; starting from scratch",
                    self.path, self.checkpoint, log_end)  # fmt: skip
        self.wipe()

    def wipe(self) -> None:
        """Forget everything: the next restore starts from the beginning of the changelog."""
        self._db.close()
        rocksdict.Rdict.destroy(str(self.path))
        shutil.rmtree(self.path, ignore_errors=True)
        self._db = self._open()
        self.checkpoint = NOTHING_APPLIED

    def close(self) -> None:
        self._db.close()


class StoreView:
    """A consistent view of a store: one RocksDB iterator, which reads the data as of its creation.

    (rocksdict 0.3.29's `Snapshot.items()` and `Snapshot.iter()` read the live data, not the snapshot's, so
    the view is the iterator itself.)
    """

    def __init__(self, iterator: rocksdict.RdictIter) -> None:
        self._iterator = iterator

    def get(self, key: bytes) -> bytes | None:
        self._iterator.seek(key)
        return self._iterator.value() if self._iterator.valid() and self._iterator.key() == key else None

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries whose keys start with `prefix`, in key order (a later `get` or `scan` moves the same cursor)."""
        iterator = self._iterator
        iterator.seek(prefix)
        while iterator.valid():
            key = iterator.key()
            if not key.startswith(prefix):
                return
            yield key, iterator.value()
            iterator.next()


class LedgerStores:
    """Every partition store of this worker, opened on first use and kept open (and on disk) across owners."""

    def __init__(self, root: Path, options: StoreOptions, expand: Expand = as_is) -> None:
        self.root = root
        self.options = options
        self.expand = expand
        self._stores: dict[int, PartitionStore] = {}

    def __getitem__(self, partition: int) -> PartitionStore:
        store = self._stores.get(partition)
        if store is None:
            path = self.root / f"partition-{partition}"
            store = self._stores[partition] = PartitionStore(path, self.options, self.expand)
        return store

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()


def storage_key(partition: int, key: str) -> bytes:
    return f"{partition}/{key}".encode()
