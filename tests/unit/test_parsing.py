"""A transfer's body: with `"pending": true` a reservation, whose `timeout_s` is a whole number of seconds (a whole
float too, as JSON Schema counts it), 1 s to 30 days; anything else about it is refused before anything is sent."""

from __future__ import annotations

from typing import Any

import pytest

from payments_app.domain.commands import Reserve, Transfer
from payments_app.domain.money import InvalidInput
from web.parsing import DEFAULT_TIMEOUT_S, parse_post, parse_transfer

NOW_MS = 1_700_000_000_000
BODY = {"id": "r1", "payer": "alice", "payee": "bob", "amount": 5}


@pytest.mark.parametrize(
    ("extra", "timeout_s"),
    [({}, DEFAULT_TIMEOUT_S), ({"timeout_s": 60}, 60), ({"timeout_s": 60.0}, 60),
     ({"timeout_s": 2_592_000}, 2_592_000)],
)  # fmt: skip
def test_a_pending_transfer_is_a_reservation_from_now(extra: dict[str, Any], timeout_s: int) -> None:
    reservation = Reserve("r1", "alice", "bob", 5, timeout_s, NOW_MS)
    assert parse_transfer({**BODY, "pending": True, **extra}, NOW_MS) == reservation


def test_a_transfer_not_pending_is_a_plain_transfer() -> None:
    assert (
        parse_transfer({**BODY, "pending": False}, NOW_MS)
        == parse_transfer(BODY, NOW_MS)
        == Transfer("r1", "alice", "bob", 5)
    )


@pytest.mark.parametrize(
    ("extra", "malformed"),
    [({"pending": True, "timeout_s": 0}, False), ({"pending": True, "timeout_s": 2_592_001}, False),
     ({"timeout_s": 60}, False), ({"pending": True, "timeout_s": 1.5}, True),
     ({"pending": True, "timeout_s": "60"}, True), ({"pending": "yes"}, True), ({"pending": 1}, True)],
)  # fmt: skip
def test_a_bad_reservation_is_refused(extra: dict[str, Any], malformed: bool) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_transfer({**BODY, **extra}, NOW_MS)
    assert refused.value.malformed == malformed


def test_a_post_takes_no_body_or_an_amount() -> None:
    assert parse_post(None, "r1").amount is None and parse_post({}, "r1").amount is None
    assert parse_post({"amount": 3.0}, "r1").amount == 3
    for body in ({"amount": 0}, {"amount": 1, "more": 1}, [], {"amount": True}):
        with pytest.raises(InvalidInput):
            parse_post(body, "r1")
