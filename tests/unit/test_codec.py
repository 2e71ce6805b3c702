"""The wire form of commands: every kind reads back as it was written, and a malformed record stops the worker."""

from __future__ import annotations

from unittest.mock import patch

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments_app.domain.checks import InvariantViolation
from payments_app.domain.commands import (
    Deposit,
    MoveCredit,
    MoveRequest,
    Offer,
    OfferRequest,
    OpenAccount,
    PayeeCredit,
    Transfer,
    Withdrawal,
)
from tables.codec import commit_records, decode_batch, encode_batch, pack_entries, store_entries, unpack_entries

ids = st.text(min_size=1, max_size=12)
amounts = st.integers(0, 10**15)
partitions = st.integers(0, 63)
rounds = st.integers(0, 2**40)
relays = st.none() | st.tuples(partitions, st.integers(0, 2**40), st.integers(0, 10**6))
commands = st.one_of(
    st.builds(OpenAccount, ids, ids),
    st.builds(Deposit, ids, ids, amounts),
    st.builds(Withdrawal, ids, ids, amounts),
    st.builds(Transfer, ids, ids, ids, amounts),
    st.builds(OfferRequest, ids, amounts, partitions, rounds, relays),
    st.builds(Offer, ids, amounts, partitions, rounds, relays),
    st.builds(MoveRequest, ids, amounts, partitions, st.none() | rounds, relays),
    st.builds(MoveCredit, ids, amounts, partitions, st.none() | rounds, relays),
    st.builds(PayeeCredit, ids, amounts, ids, relays),
)


@given(st.lists(commands, max_size=20))
def test_every_command_reads_back_as_it_was_written(batch: list) -> None:
    assert decode_batch(encode_batch(batch)) == batch


@pytest.mark.parametrize(
    "payload",
    [
        b'{"kind": "transfer"}',
        b'[{"kind": "transfer", "id": "t", "payer": "a", "amount": 1}]',
        b'[{"kind": "refund", "id": "t"}]',
        b'[{"id": "t"}]',
        b"[1]",
        b"not json",
    ],
)
def test_a_malformed_record_is_refused(payload: bytes) -> None:
    with pytest.raises(InvariantViolation, match="undecodable record"):
        decode_batch(payload)


def test_a_relay_id_reads_back_as_a_tuple() -> None:
    (credit,) = decode_batch(orjson.dumps([{"kind": "move_credit", "account": "a", "amount": 5, "source": 1,
                                            "round": None, "relay": [1, 2, 3]}]))  # fmt: skip
    assert credit == MoveCredit("a", 5, 1, None, (1, 2, 3))


entries = st.lists(st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=300)), max_size=50)


@given(entries)
def test_packed_entries_read_back_as_they_were_whatever_their_bytes(packed: list[tuple[bytes, bytes]]) -> None:
    assert unpack_entries(pack_entries(packed)) == packed


@given(entries, st.integers(1, 2_000))
def test_a_commit_travels_in_records_of_bounded_size_and_reads_back_whole(
    stored: list[tuple[bytes, bytes]], limit: int
) -> None:
    with patch("tables.codec.MAX_PACK_BYTES", limit):
        records = commit_records("5/", 77, stored)
    assert [key for key, _ in records] == [f"5/r/77/{part}".encode() for part in range(len(records))]
    assert [entry for key, value in records for entry in store_entries(key, value)] == stored
    for _, value in records:
        packed = unpack_entries(value)
        assert len(packed) == 1 or sum(len(key) + len(value) for key, value in packed) <= limit


def test_entries_holding_a_nul_byte_are_packed_by_length_and_read_back() -> None:
    entries = [(b"0/t/a\x00b", b'["a\\u0000b"]'), (b"0/h/x/1", b"a\x00b")]
    packed = pack_entries(entries)
    assert packed[:1] == b"\x03" and unpack_entries(packed) == entries
    assert pack_entries(entries[:1])[:1] == b"\x03" and pack_entries([(b"k", b"v")]) == b"\x02k\x00v"


def test_version_3_packs_still_read() -> None:
    """Version 4 changed only the markers (0 and 1 became 2 and 3): a changelog written before restores."""
    assert unpack_entries(b"\x00k\x00v\x00k2\x00v2") == [(b"k", b"v"), (b"k2", b"v2")]
    by_length = b"\x01" + pack_entries([(b"a\x00", b"b")])[1:]
    assert unpack_entries(by_length) == [(b"a\x00", b"b")]


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00", b"\x04k\x00v", b"\x02k", b"\x00k", b"\x00k\x00v\x00w", b"\x01\x01\x00\x00",
     b"\x01\x01\x00\x00\x00\x05\x00\x00\x00", b"\x01\x00\x00\x00\x00x"],
)  # fmt: skip
def test_packed_entries_that_do_not_add_up_are_refused(value: bytes) -> None:
    with pytest.raises(InvariantViolation, match="packed entries"):
        unpack_entries(value)


def test_no_entries_pack_and_read_back_as_none() -> None:
    assert unpack_entries(pack_entries([])) == []
