"""The partition store's guarantees that the runtime and the audit rely on, on a real RocksDB."""

from __future__ import annotations

from pathlib import Path

import pytest

from payments_app.domain.checks import InvariantViolation
from tables.ledger import PartitionStore, StoreOptions

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
