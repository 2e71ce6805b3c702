"""The partition store's guarantees that the runtime and the audit rely on, on a real RocksDB."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from payments_app.domain.checks import InvariantViolation
from payments_app.domain.ledger import TxRecord
from tables.codec import commit_records, store_entries, transaction_entries
from tables.ledger import CHECKPOINT_KEY, PartitionStore, StoreOptions

DECIDED_MS = 1_764_000_000_000
OPTIONS = StoreOptions(block_cache_bytes=1 << 20, write_buffer_bytes=1 << 20)


def test_a_view_reads_the_store_as_it_was_when_made(tmp_path: Path) -> None:
    """An audit scans a view while the agent keeps writing: the scan must see one consistent cut."""
    store = PartitionStore(tmp_path / "p0", OPTIONS)
    store.apply([(b"0/m", b"meta-1"), (b"0/s/a", b"1"), (b"0/s/b", b"2"), (b"0/s/c", b"3")], changelog_offset=0)
    view = store.view()
    store.apply([(b"0/m", b"meta-2"), (b"0/s/a", b"10"), (b"0/s/bb", b"20")], changelog_offset=1)
    assert view.get(b"0/m") == b"meta-1"
    assert list(view.scan(b"0/s/")) == [(b"0/s/a", b"1"), (b"0/s/b", b"2"), (b"0/s/c", b"3")]
    assert view.get(b"0/s/bb") is None
    assert list(store.view().scan(b"0/s/")) == [
        (b"0/s/a", b"10"),
        (b"0/s/b", b"2"),
        (b"0/s/bb", b"20"),
        (b"0/s/c", b"3"),
    ]
    store.close()


def test_the_checkpoint_survives_a_reopen_and_only_moves_forward(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0", OPTIONS)
    store.apply([(b"0/s/a", b"1")], changelog_offset=4)
    store.close()
    reopened = PartitionStore(tmp_path / "p0", OPTIONS)
    assert reopened.checkpoint == 4 and reopened.get(b"0/s/a") == b"1"
    with pytest.raises(InvariantViolation):
        reopened.apply([(b"0/s/a", b"2")], changelog_offset=4)
    assert reopened.apply_log([(3, b"0/s/a", b"old"), (5, b"0/s/a", b"new")]) == 1
    assert reopened.get(b"0/s/a") == b"new" and reopened.checkpoint == 5
    reopened.close()


def test_a_restore_writes_what_the_owner_wrote(tmp_path: Path) -> None:
    """The changelog packs a commit's store entries into one record; a store restored from it must answer every
    lookup exactly as the owner's store, which the commit wrote directly, does."""
    applied = TxRecord("t1", "transfer", "applied", None, {"payer": "a/r/x", "payee": "b", "amount": 5})
    pending = TxRecord("d1", "withdrawal", "pending", None, {"account": "a/r/x", "amount": 7})
    segment = (b"3/s/a/r/x", b"[1,0,0]")  # an account name holding "/r/" is still a segment
    owner_entries = [*transaction_entries("3/", 41, [applied.to_row(), pending.to_row()], DECIDED_MS), segment]
    changelog = commit_records("3/", 41, owner_entries)
    assert [key for key, _ in changelog] == [b"3/r/41/0"]
    restored = PartitionStore(tmp_path / "p3", OPTIONS, store_entries)
    assert restored.apply_log([(0, *changelog[0])]) == 1
    owner = PartitionStore(tmp_path / "owner", OPTIONS)
    owner.apply(owner_entries, changelog_offset=0)
    history = [f"3/h/{account}/{DECIDED_MS}.0003.000000000041.00000".encode() for account in ("a/r/x", "b")]
    for key in (b"3/t/t1", b"3/t/d1", segment[0], *history):
        assert restored.get(key) == owner.get(key) is not None
    assert restored.get(history[0]) == restored.get(history[1]) == b"t1"
    assert [value for key, value in owner_entries if b"/h/" in key] == [b"t1", b"t1"]  # not the pending one
    assert TxRecord.from_row(orjson.loads(restored.get(b"3/t/d1") or b"null")) == pending
    assert restored.get(changelog[0][0]) is None
    restored.close()
    owner.close()


def test_a_version_2_changelog_restores_as_it_did(tmp_path: Path) -> None:
    """Version 2 kept each segment under its own key and a commit's rows as one `r/{seq}` entry; a worker of a
    later version restores such a changelog into the same entries as a version 3 commit stores."""
    applied = TxRecord("t1", "transfer", "applied", None, {"payer": "a/r/x", "payee": "b", "amount": 5})
    rows = [applied.to_row()]
    segment = (b"3/s/a/r/x", b"[1,0,0]")
    restored = PartitionStore(tmp_path / "p3", OPTIONS, store_entries)
    assert restored.apply_log([(0, b"3/r/41", orjson.dumps([DECIDED_MS, rows])), (1, *segment)]) == 2
    for key, value in [*transaction_entries("3/", 41, rows, DECIDED_MS), segment]:
        assert restored.get(key) == value
    assert restored.get(b"3/r/41") is None
    restored.close()


def test_an_account_history_reads_back_newest_first_a_page_at_a_time(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p1", OPTIONS)
    rows = [
        TxRecord(f"t{n}", "deposit", "applied", None, {"account": "acc", "amount": n + 1}).to_row() for n in range(5)
    ]
    other = TxRecord("x", "deposit", "applied", None, {"account": "acc2", "amount": 9}).to_row()
    for offset, row in enumerate([*rows, other]):
        store.apply(transaction_entries("1/", offset, [row], DECIDED_MS + offset), changelog_offset=offset)
    prefix = b"1/h/acc/"
    first = store.scan_back(prefix, None, 2)
    assert [value for _, value in first] == [b"t4", b"t3"]
    rest = store.scan_back(prefix, first[-1][0][len(prefix) :], 10)
    assert [value for _, value in rest] == [b"t2", b"t1", b"t0"]
    assert store.scan_back(prefix, rest[-1][0][len(prefix) :], 10) == []
    store.close()


WRITER = """
import sys
from pathlib import Path
from tables.ledger import CHECKPOINT_KEY, PartitionStore, StoreOptions
store = PartitionStore(Path(sys.argv[1]), StoreOptions(block_cache_bytes=1 << 20, write_buffer_bytes=1 << 20))
for offset in range(1_000_000):
    store.apply([(f"0/s/{offset}".encode(), b"x" * 200), (f"0/t/{offset}".encode(), b"y" * 200)], offset)
    if offset == 20_000:
        print("written", flush=True)
"""


def test_a_store_killed_mid_write_reopens_as_a_committed_prefix(tmp_path: Path) -> None:
    """The stores keep no write-ahead log, so a killed worker loses what RocksDB had not flushed yet; what it
    kept must still be every batch up to its own checkpoint and none after it, or a restore would resume from
    the wrong place."""
    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "p0")], cwd=root, stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"written\n"
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    store = PartitionStore(tmp_path / "p0", OPTIONS)
    kept = store.checkpoint
    assert kept > 0, "nothing was flushed before the kill"
    assert all(store.get(f"0/{kind}/{offset}".encode()) is not None for offset in range(kept + 1) for kind in "st")
    assert store.get(f"0/s/{kept + 1}".encode()) is None and store.get(f"0/t/{kept + 1}".encode()) is None
    store.close()


def test_an_entry_under_the_checkpoint_key_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "p0", OPTIONS)
    store.apply([(b"0/s/a", b"1")], changelog_offset=0)
    with pytest.raises(InvariantViolation, match="checkpoint key"):
        store.apply([(b"0/s/a", b"2"), (CHECKPOINT_KEY, b"99")], changelog_offset=1)
    assert (store.checkpoint, store.get(b"0/s/a"), store.get(CHECKPOINT_KEY)) == (0, b"1", b"0")
    store.close()
