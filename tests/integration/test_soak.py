"""A short soak, end to end: its own broker SIGKILLed and restarted under load (on the Kafka path and through the
HTTP API), workers killed and replaced, leave/join cycles; every figure measured and every invariant holding
afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.soak import Soak, SoakSettings

pytestmark = pytest.mark.broker


async def test_a_short_soak_keeps_every_invariant_through_every_fault(tmp_path: Path) -> None:
    settings = SoakSettings(history=20_000, kills=2, leave_join_cycles=1, offered_tps=1_000, full_load_cycles=1)
    soak = Soak(settings, tmp_path)
    try:
        result = await soak.run()
    except BaseException:
        print(soak.kafka.log_tail(), *(worker.log_tail() for worker in soak.workers), sep="\n")
        raise
    assert result.audit_ok and not result.problems, result.problems
    assert result.decided == result.submitted_ids > 20_000
    assert result.api_submitted > 0  # some of them through the HTTP API, applied at their owner, under the faults
    assert (result.worker_kills, result.broker_restarts, len(result.decide_after_change_s)) == (2, 1, 2)
    assert len(result.decide_after_change_full_load_s) == 2 and result.full_load_tps > 0
    assert result.restart_to_healthy_s > 0 and result.takeover_after_kill_s > 0 and result.empty_volume_to_healthy_s > 0
    assert result.disk_bytes_per_million["broker_changelog"] > 0
