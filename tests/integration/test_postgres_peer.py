"""The PostgreSQL peer runs the workload on a real server, and its invariant check catches a broken ledger."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.common import RunSettings
from bench.postgres_peer import run_postgres

pytestmark = pytest.mark.postgres


def postgres_pids() -> set[int]:
    """The `postgres` processes of the postgres user (a server already on the machine is not ours)."""
    found = subprocess.run(["pgrep", "-u", "postgres", "postgres"], capture_output=True, text=True, check=False)
    return {int(pid) for pid in found.stdout.split()}


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Every server a test starts is gone when the test ends."""
    before = postgres_pids()
    yield
    assert postgres_pids() <= before, "a postgres process outlived the run"


def small(**overrides: object) -> RunSettings:
    return RunSettings(accounts=200, duration_s=2.0, in_flight_batches=4, **overrides)


async def test_a_short_run_completes_with_its_invariants(tmp_path: Path) -> None:
    result = await run_postgres(small(workload="hot-payer"), tmp_path)
    assert result.invariants_ok, result.problems
    assert result.model == "postgres" and result.path == "sql"
    assert result.submitted > 0 and result.applied + result.rejected == result.submitted
    assert result.applied_tps > 0 and result.p50_ms <= result.p99_ms
    assert result.settings["postgres"]["server"]["fsync"] == "on"
    assert result.cpu_s["postgres"] > 0 and result.peak_rss_mb["postgres"] > 0


async def test_the_invariant_check_fails_on_a_broken_ledger(tmp_path: Path) -> None:
    result = await run_postgres(small(forge_credit=True), tmp_path)
    assert not result.invariants_ok
    assert any("balances" in problem for problem in result.problems), result.problems
