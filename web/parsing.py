"""Turn request bodies into domain commands, or say precisely what is wrong (400 shape, 422 meaning)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from payments_app.domain.commands import Deposit, PostReserved, Reserve, Transfer, Withdrawal
from payments_app.domain.money import InvalidInput, require_amount, require_id, require_whole

MAX_BODY_BYTES = 4 * 2**20
MAX_TRANSFERS_PER_REQUEST = 10_000
#: a reservation's `timeout_s`: at least a second, at most 30 days, a day unless the request says
MIN_TIMEOUT_S, MAX_TIMEOUT_S, DEFAULT_TIMEOUT_S = 1, 30 * 86_400, 86_400


class BodyTooLarge(ValueError):
    pass


def parse_json(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}", malformed=True) from exc


def _fields(
    data: Any, required: tuple[str, ...], where: str = "body", optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput(f"{where} must be a JSON object", malformed=True)
    missing = [name for name in required if name not in data]
    if missing:
        raise InvalidInput(f"{where} is missing {', '.join(f'`{m}`' for m in missing)}", malformed=True)
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise InvalidInput(f"{where} has unknown field(s) {', '.join(f'`{u}`' for u in unknown)}", malformed=True)
    return data


def parse_new_account(data: Any) -> str:
    return require_id(_fields(data, ("id",))["id"], "id")


def parse_deposit(data: Any) -> Deposit:
    fields = _fields(data, ("id", "account", "amount"))
    return Deposit(
        require_id(fields["id"], "id"), require_id(fields["account"], "account"), require_amount(fields["amount"])
    )


def parse_withdrawal(data: Any) -> Withdrawal:
    fields = _fields(data, ("id", "account", "amount"))
    return Withdrawal(
        require_id(fields["id"], "id"), require_id(fields["account"], "account"), require_amount(fields["amount"])
    )


def parse_transfer(data: Any, now_ms: int, where: str = "body") -> Transfer | Reserve:
    """A transfer, or with `"pending": true` a reservation (`timeout_s` from now, a day by default)."""
    fields = _fields(data, ("id", "payer", "payee", "amount"), where, optional=("pending", "timeout_s"))
    tx_id, payer, payee = (
        require_id(fields["id"], "id"),
        require_id(fields["payer"], "payer"),
        require_id(fields["payee"], "payee"),
    )
    amount = require_amount(fields["amount"])
    if payer == payee:
        raise InvalidInput(f"{where}: `payer` and `payee` must be different accounts", malformed=False)
    pending = fields.get("pending", False)
    if not isinstance(pending, bool):
        raise InvalidInput(f"{where}: `pending` must be true or false", malformed=True)
    if not pending:
        if "timeout_s" in fields:
            raise InvalidInput(f"{where}: `timeout_s` is only for a pending transfer", malformed=False)
        return Transfer(tx_id, payer, payee, amount)
    timeout_s = require_whole(fields.get("timeout_s", DEFAULT_TIMEOUT_S), "timeout_s", MIN_TIMEOUT_S, MAX_TIMEOUT_S,
                              "seconds")  # fmt: skip
    return Reserve(tx_id, payer, payee, amount, timeout_s, now_ms)


def parse_post(data: Any, tx_id: str) -> PostReserved:
    """`POST /transfers/{id}/post`: an empty body or `{}` posts all of it, `{"amount": N}` N of it."""
    if data is None:
        return PostReserved(tx_id, None)
    fields = _fields(data, (), optional=("amount",))
    return PostReserved(tx_id, require_amount(fields["amount"]) if "amount" in fields else None)


def parse_transfers(data: Any, now_ms: int) -> tuple[list[Transfer | Reserve], bool]:
    """One transfer object, or an array of 1..10,000; returns the transfers and whether an array was sent."""
    if not isinstance(data, list):
        return [parse_transfer(data, now_ms)], False
    if not 1 <= len(data) <= MAX_TRANSFERS_PER_REQUEST:
        raise InvalidInput(f"an array must hold 1 to {MAX_TRANSFERS_PER_REQUEST} transfers", malformed=False)
    transfers = [parse_transfer(item, now_ms, f"item {n}") for n, item in enumerate(data)]
    seen: set[str] = set()
    for n, transfer in enumerate(transfers):
        if transfer.id in seen:
            raise InvalidInput(f"item {n}: id {transfer.id!r} appears twice in this request", malformed=False)
        seen.add(transfer.id)
    return transfers, True


MAX_WAIT_S = 30


def parse_wait(value: str | None) -> float:
    """`?wait=<seconds>`: how long to hold the answer for a decision; 0 to 30, absent means 0."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError as exc:
        raise InvalidInput("`wait` must be a number of seconds", malformed=True) from exc
    if not 0 <= seconds <= MAX_WAIT_S:
        raise InvalidInput(f"`wait` must be between 0 and {MAX_WAIT_S} seconds", malformed=False)
    return seconds


MAX_HISTORY_LIMIT = 1_000
DEFAULT_HISTORY_LIMIT = 100
_CURSOR = re.compile(r"\d{13}\.\d{4}\.\d{12}\.\d{5}")


def parse_history_query(limit: str | None, cursor: str | None) -> tuple[int, str | None]:
    """`?limit=` (1 to 1,000, default 100) and `?cursor=` (a page's `next_cursor`) of an account's history."""
    if limit is None:
        count = DEFAULT_HISTORY_LIMIT
    elif not limit.isdigit():
        raise InvalidInput("`limit` must be a whole number", malformed=True)
    else:
        count = int(limit)
    if not 1 <= count <= MAX_HISTORY_LIMIT:
        raise InvalidInput(f"`limit` must be between 1 and {MAX_HISTORY_LIMIT}", malformed=False)
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        raise InvalidInput("`cursor` must be a `next_cursor` this API returned", malformed=False)
    return count, cursor
