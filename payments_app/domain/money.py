"""Amount and id rules: integers in minor units, bounded; ids from a small safe alphabet."""

from __future__ import annotations

import re
import zlib

MAX_AMOUNT_MINOR = 2**53 - 1  # the largest integer every JSON client represents exactly
ID_MAX_LENGTH = 64
_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


class InvalidInput(ValueError):
    """Input the system refuses. `malformed` is a shape error (HTTP 400), otherwise a semantic one (422)."""

    def __init__(self, detail: str, *, malformed: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.malformed = malformed


def require_id(value: object, field: str) -> str:
    """An account or transaction id: a string of 1-64 characters of `A-Z a-z 0-9 _ . : -`."""
    if not isinstance(value, str):
        raise InvalidInput(f"`{field}` must be a string", malformed=True)
    if not _ID_PATTERN.fullmatch(value):
        raise InvalidInput(f"`{field}` must be 1-{ID_MAX_LENGTH} characters of A-Z a-z 0-9 _ . : -", malformed=False)
    return value


def require_amount(value: object, field: str = "amount") -> int:
    """An amount in minor units: a whole JSON number (never a fraction, string or boolean) in 1..2**53-1."""
    return require_whole(value, field, 1, MAX_AMOUNT_MINOR, "minor units")


def require_whole(value: object, field: str, low: int, high: int, unit: str) -> int:
    """A whole JSON number in `low..high` (never a fraction, string or boolean).

    JSON has one number type: `100.0` is the integer 100 to JSON Schema, so it is taken as 100. Below 2**53 a
    whole float converts exactly; above it the range check refuses it.
    """
    if isinstance(value, float) and value.is_integer():
        if not low <= value <= high:
            raise InvalidInput(f"`{field}` must be between {low} and {high}", malformed=False)
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"`{field}` must be a whole number of {unit}", malformed=True)
    if not low <= value <= high:
        raise InvalidInput(f"`{field}` must be between {low} and {high}", malformed=False)
    return value


def partition_of(key: str, partitions: int) -> int:
    """The partition that owns a transaction id (or an account's home record): stable across processes."""
    return zlib.crc32(key.encode()) % partitions
