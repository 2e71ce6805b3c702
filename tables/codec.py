"""Bytes on the wire and in the stores: orjson, compact, no floats anywhere near money.

The stored formats carry one version, `STORED_FORMAT`, for the changelog and the RocksDB stores together:

1. a segment is a dict (`{"balance", "moved_in", "moved_out", ...}`);
2. a segment is a list, `[balance, moved_in, moved_out]`, with a fourth item (a dict of extras) only while debits
   wait, a collection round is open or the segment names the request that opened its account.

A worker writes `STORED_FORMAT` and reads every earlier version too (`Segment.from_stored`); a worker of an older
version cannot read a newer one (it stops before committing anything), so a rollout across a version goes forward,
not back. Each worker reports the version it writes in `/internal/progress`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from payments_app.domain.checks import InvariantViolation
from payments_app.domain.commands import Command, from_dict, to_dict
from payments_app.domain.ledger import (
    PENDING,
    history_accounts,
    history_positions,
    history_prefix,
    transaction_key,
    transactions_key,
)

STORED_FORMAT = 2

#: commands per record: a group's relays to one partition can number thousands, and a record must stay well
#: under the producer's 1 MB request limit (a relay is about 120 bytes encoded)
MAX_COMMANDS_PER_RECORD = 2_000


def encode_batch(commands: Sequence[Command]) -> bytes:
    """One Kafka record may carry many commands: a JSON array of their dict forms."""
    return orjson.dumps([to_dict(command) for command in commands])


def decode_batch(payload: bytes) -> list[Command]:
    """The commands of a record; a record that is not a list of commands stops the worker, it is never skipped."""
    try:
        items = orjson.loads(payload)
        if not isinstance(items, list):
            raise TypeError(f"a record holds a list of commands, not {type(items).__name__}")
        return [from_dict(item) for item in items]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvariantViolation(f"undecodable record: {exc!r}: {payload[:200]!r}") from exc


def encode_entry(entry: dict[str, Any]) -> bytes:
    return orjson.dumps(entry)


def decode_entry(payload: bytes | None) -> Any:
    return None if payload is None else orjson.loads(payload)


def encode_transactions(
    prefix: str, seq: int, rows: list[list[Any]], decided_ms: int
) -> tuple[tuple[bytes, bytes], list[tuple[bytes, bytes]]]:
    """A commit's transaction rows as one changelog entry, and as the store keeps them: one entry per id, and one
    history entry per account a decided transaction shows for (`history_accounts`), stamped `decided_ms`.

    `prefix` is the partition's storage-key prefix. One changelog message per commit instead of one per
    transaction: the producer, the broker and every standby handle a third fewer messages per transfer. Each row
    is encoded once: the changelog's `[decided_ms, [row, ...]]` is spliced from the store's encodings.
    """
    encoded = [orjson.dumps(row) for row in rows]
    value = b"[%d,[%b]]" % (decided_ms, b",".join(encoded))
    return ((prefix + transactions_key(seq)).encode(), value), _store_rows(prefix, seq, decided_ms, rows, encoded)


def store_entries(key: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    """What one changelog entry becomes in a store (a restore, a standby): itself, or for a commit's
    transaction rows (`transactions_key`), what `encode_transactions` stores for them."""
    slash = key.index(b"/") + 1  # after the partition: "{partition}/{ledger key}"
    if not key.startswith(b"r/", slash):
        return [(key, value)]
    decided_ms, rows = orjson.loads(value)
    return _store_rows(key[:slash].decode(), int(key[slash + 2 :]), decided_ms, rows, map(orjson.dumps, rows))


def _store_rows(
    prefix: str, seq: int, decided_ms: int, rows: list[list[Any]], encoded: Iterable[bytes]
) -> list[tuple[bytes, bytes]]:
    """A row per id (`encoded`: each row's bytes), and per decided row a history entry for each account it shows
    for: the key says where it sorts, the value is only the id (a history read looks the row up; this runs for
    every transfer, twice)."""
    rows_at = prefix + transaction_key("")
    entries = [((rows_at + row[0]).encode(), value) for row, value in zip(rows, encoded, strict=True)]
    position_of = history_positions(decided_ms, int(prefix[:-1]), seq)
    for index, row in enumerate(rows):
        if row[2] == PENDING:
            continue
        position = position_of(index)
        tx_id = row[0].encode()
        for account in history_accounts(row):
            entries.append(((prefix + history_prefix(account) + position).encode(), tx_id))
    return entries


def group_by_partition(commands: Iterable[tuple[int, Command]]) -> dict[int, list[Command]]:
    by_partition: dict[int, list[Command]] = defaultdict(list)
    for partition, command in commands:
        by_partition[partition].append(command)
    return by_partition


def chunks(commands: list[Command]) -> list[list[Command]]:
    """Consecutive slices of at most MAX_COMMANDS_PER_RECORD (none for an empty list)."""
    return [commands[i : i + MAX_COMMANDS_PER_RECORD] for i in range(0, len(commands), MAX_COMMANDS_PER_RECORD)]


def encode_records(by_partition: dict[int, list[Command]]) -> dict[int, list[bytes]]:
    """Records to send per destination partition, each within the record size limit; empty lists send nothing."""
    return {p: [encode_batch(chunk) for chunk in chunks(cmds)] for p, cmds in by_partition.items() if cmds}
