"""The wire form of commands: every kind reads back as it was written, and a malformed record stops the worker."""

from __future__ import annotations

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
from tables.codec import decode_batch, encode_batch

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
