"""Checks that stay on under `python -O`: a broken invariant stops the work instead of corrupting money."""

from __future__ import annotations


class InvariantViolation(RuntimeError):
    """State or input that the ledger's rules say cannot exist; the worker must stop, not carry on."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantViolation(message)
