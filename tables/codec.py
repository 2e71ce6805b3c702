"""Bytes on the wire and in the stores: orjson, compact, no floats anywhere near money.

The stored formats carry one version, `STORED_FORMAT`, for the changelog and the RocksDB stores together:

1. a segment is a dict (`{"balance", "moved_in", "moved_out", ...}`);
2. a segment is a list, `[balance, moved_in, moved_out]`, with a fourth item (a dict of extras) only while debits
   wait, a collection round is open or the segment names the request that opened its account; the changelog
   holds each segment and the meta under its own key, and a commit's transaction rows as one entry (`r/{seq}`);
3. the changelog holds a commit's store entries packed (`r/{seq}/{part}`, `pack_entries`): a commit is one
   changelog record per partition instead of about two per transfer, and a standby or a restore writes what it
   reads without decoding any of it. (A version 2 worker reading such a key fails on its seq, `41/0`, and stops.)
4. reservations (two-phase transfers): a segment's extras may hold `reserved`; a reservation's row
   (`ROW_FIELDS["reservation"]`), its history entries naming the step they show (`"{id} {status}"`), and an expiry
   entry (`x/{expires ms}/{id}`) while it is reserved, removed by an empty value once it is resolved. Packs carry
   new markers (`pack_entries`): a version 3 worker refuses them and stops, where it would have read a segment
   without its reserved money.

A worker writes `STORED_FORMAT` and reads every earlier version too (`Segment.from_stored`, `store_entries`); a
worker of an older version cannot read a newer one (it stops before committing anything), so a rollout across a
version goes forward, not back. Each worker reports the version it writes in `/internal/progress`.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain
from typing import Any, NoReturn

import orjson

from payments_app.domain.checks import InvariantViolation
from payments_app.domain.commands import Command, from_dict, to_dict
from payments_app.domain.ledger import (
    PENDING,
    REJECTED,
    RESERVATION,
    RESERVED,
    expiry_key,
    history_accounts,
    history_positions,
    history_prefix,
    transaction_key,
)

STORED_FORMAT = 4

#: commands per record: a group's relays to one partition can number thousands, and a record must stay well
#: under the producer's 1 MB request limit (a relay is about 120 bytes encoded)
MAX_COMMANDS_PER_RECORD = 2_000
#: a store entry with this value is removed (`tables.ledger.PartitionStore.apply`): no stored value is empty
DELETED = b""
#: a commit's store entries travel in changelog records of at most this many bytes (well within the producer's
#: batch and the broker's 1 MiB record limit); an entry larger than that travels alone
MAX_PACK_BYTES = 512 * 1024
_COUNT = struct.Struct("<I")


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


def decode_entries(payloads: Iterable[bytes]) -> list[Any]:
    """Many entries' values in one call (an audit decodes every segment)."""
    return orjson.loads(b"[%b]" % b",".join(payloads))  # type: ignore[no-any-return]


def transaction_entries(prefix: str, seq: int, rows: list[list[Any]], decided_ms: int) -> list[tuple[bytes, bytes]]:
    """A commit's transaction rows as the store keeps them: one entry per id, and per decided row a history entry
    for each account it shows for (`history_accounts`), stamped `decided_ms`: the key says where it sorts, the value
    is only the id (a history read looks the row up; this runs for every transfer, twice), or for a reservation the
    id and the step it shows. A reservation also has its expiry entry while it is reserved. `prefix` is the
    partition's storage-key prefix."""
    rows_at = prefix + transaction_key("")
    entries = [((rows_at + row[0]).encode(), orjson.dumps(row)) for row in rows]
    position_of = history_positions(decided_ms, int(prefix[:-1]), seq)
    for index, row in enumerate(rows):
        if row[2] == PENDING:
            continue
        position = position_of(index)
        shown = row[0].encode()
        if row[1] == RESERVATION:
            shown = f"{row[0]} {row[2]}".encode()
            if row[2] != REJECTED:  # a rejected one never held anything
                held = row[2] == RESERVED
                entries.append(((prefix + expiry_key(row[8], row[0])).encode(), row[0].encode() if held else DELETED))
        for account in history_accounts(row):
            entries.append(((prefix + history_prefix(account) + position).encode(), shown))
    return entries


def commit_key(seq: int, part: int) -> str:
    """A changelog record holding (part of) the store entries of the commit that applied batches up to `seq`:
    unique, since each commit applies batches past the previous one's, so compaction never drops one."""
    return f"r/{seq}/{part}"


def pack_entries(entries: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Entries as one value. Usually (no key or value holds a NUL byte: JSON never does, ids rarely) a byte 2, then
    every key and value joined by NULs, which a reader splits in one C call; else a byte 3, the entries' count
    (little-endian u32), every key's and value's length (u32 each), then their bytes. (Version 3 marked them 0 and
    1: a version 3 worker refuses version 4's packs, so it stops rather than read reservations it cannot keep.)"""
    parts = list(chain.from_iterable(entries))
    joined = b"\0".join(parts)
    if joined.count(b"\0") == len(parts) - 1:
        return b"\2" + joined
    return b"\3" + _COUNT.pack(len(entries)) + struct.pack(f"<{len(parts)}I", *map(len, parts)) + b"".join(parts)


#: a pack's first byte: its entries joined by NULs, or counted by their lengths (versions 3 and 4)
JOINED_MARKERS, LENGTHS_MARKERS = (b"\0", b"\2"), (b"\1", b"\3")


def unpack_entries(value: bytes) -> list[tuple[bytes, bytes]]:
    """What `pack_entries` packed, in version 3 or 4; a value that does not add up stops the worker, it is never
    skipped."""
    marker = value[:1]
    if marker in JOINED_MARKERS:
        parts = value[1:].split(b"\0")
        if len(parts) % 2:
            return _refuse(f"an odd number of parts, {len(parts)}", value)
        return list(zip(parts[0::2], parts[1::2], strict=True))
    if marker not in LENGTHS_MARKERS:
        return _refuse("no known marker", value)
    try:
        (count,) = _COUNT.unpack_from(value, 1)
        lengths = struct.unpack_from(f"<{2 * count}I", value, 1 + _COUNT.size)
    except struct.error as exc:
        return _refuse(str(exc), value)
    ends = list(accumulate(lengths, initial=1 + _COUNT.size * (1 + 2 * count)))
    if ends[-1] != len(value):
        return _refuse(f"they end at {ends[-1]}, not at the value's end {len(value)}", value)
    parts = list(map(value.__getitem__, map(slice, ends[:-1], ends[1:])))  # in C: no bytecode per entry
    return list(zip(parts[0::2], parts[1::2], strict=True))


def _refuse(why: str, value: bytes) -> NoReturn:
    raise InvariantViolation(f"unreadable packed entries ({why}): {value[:200]!r}")


def commit_records(prefix: str, seq: int, entries: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A commit's store entries as changelog records (`commit_key`), each packing at most MAX_PACK_BYTES of them
    (nearly every commit fits in one: it is packed once, and only a larger one is measured entry by entry)."""
    if not entries:
        return []
    packed = pack_entries(entries)
    if len(packed) <= MAX_PACK_BYTES:
        return [((prefix + commit_key(seq, 0)).encode(), packed)]
    packs, start, size = [], 0, 0
    for index, (key, value) in enumerate(entries):
        if size + len(key) + len(value) > MAX_PACK_BYTES and index > start:
            packs.append(entries[start:index])
            start, size = index, 0
        size += len(key) + len(value)
    packs.append(entries[start:])
    return [((prefix + commit_key(seq, part)).encode(), pack_entries(pack)) for part, pack in enumerate(packs)]


def store_entries(key: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    """What one changelog record becomes in a store (a restore, a standby): the entries a commit packed
    (`commit_records`); from version 2, a commit's transaction rows (`r/{seq}`, no part) expanded as
    `transaction_entries` stores them, or a segment or meta entry as it is."""
    slash = key.index(b"/") + 1  # after the partition: "{partition}/{ledger key}"
    if not key.startswith(b"r/", slash):
        return [(key, value)]
    if b"/" in key[slash + 2 :]:
        return unpack_entries(value)
    decided_ms, rows = orjson.loads(value)
    return transaction_entries(key[:slash].decode(), int(key[slash + 2 :]), rows, decided_ms)


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
