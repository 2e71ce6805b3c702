"""The ledger agent: records of every owned transactions partition, applied a group at a time (`runtime.commit`)."""

from __future__ import annotations

import faust

from payments_app.runtime.metrics import METRICS
from payments_app.service.app import app
from payments_app.service.composition import PIPELINE, failed, owned_session
from payments_app.service.topics import transactions_topic


@app.agent(transactions_topic, concurrency=1)
async def apply_transactions(stream: faust.StreamT) -> None:
    """Stage records into the open group while the previous one commits (group commit, `runtime.commit.Pipeline`).

    Faust acks a group's events when this body moves on, which can be before their commit: a record acked and
    never committed (the worker died, or was fenced) is applied by whoever opens the partition next, since an
    opening session applies every record below the group's committed offset that its store lacks.
    """
    async for event in stream.events():
        try:
            session = await owned_session(event.message.partition, event.message.offset)
            if session is None:
                METRICS.records_not_owned_total += 1  # revoked: its new owner applies it
                continue
            await PIPELINE.add(session, event.message.offset, event.value, event.message.timestamp)
        except Exception as exc:  # noqa: BLE001 - any failure stops the worker (the pipeline's has already)
            failed(exc)
