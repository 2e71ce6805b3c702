"""Bytes on the wire and in the tables: orjson, compact, no floats anywhere near money."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from payments_app.domain.commands import Command, from_dict, to_dict


def encode_batch(commands: Sequence[Command]) -> bytes:
    """One Kafka record may carry many commands: a JSON array of their dict forms."""
    return orjson.dumps([to_dict(command) for command in commands])


def decode_batch(payload: bytes) -> list[Command]:
    return [from_dict(item) for item in orjson.loads(payload)]


def encode_entry(entry: dict[str, Any]) -> bytes:
    return orjson.dumps(entry)


def decode_entry(payload: bytes | None) -> dict[str, Any] | None:
    return None if payload is None else orjson.loads(payload)
