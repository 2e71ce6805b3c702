"""End-of-test checks of the four invariants, over HTTP, from what the test itself submitted."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.integration.cluster import call, wait_for


async def statuses(session: aiohttp.ClientSession, url: str, ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each id's record (None for an id the system never accepted), fetched 50 at a time."""
    found: dict[str, dict[str, Any] | None] = {}
    for start in range(0, len(ids), 50):
        chunk = ids[start : start + 50]
        answers = await asyncio.gather(*(call(session, "GET", f"{url}/transactions/{tx_id}") for tx_id in chunk))
        for tx_id, (status, body) in zip(chunk, answers, strict=True):
            assert status in (200, 404), (tx_id, status, body)
            found[tx_id] = body if status == 200 else None
    return found


async def explain_pending(session: aiohttp.ClientSession, url: str, record: dict[str, Any]) -> str:
    """The payer's account and every partition's meta, for the failure message."""
    account = record.get("payer") or record.get("account")
    status, audit = await call(session, "GET", f"{url}/audit")
    lines = [f"audit ({status}): ok={audit.get('ok')} in_flight={audit.get('in_flight')}"]
    for item in audit.get("partitions", []):
        meta = item["meta"]
        lines.append(
            f"partition {item['partition']}: offset {meta['offset']} relay_seen {meta['relay_seen']} "
            f"next_round {meta['next_round']}"
        )
    try:
        status, body = await call(session, "GET", f"{url}/accounts/{account}")
        lines.append(f"account {account} ({status}): {body}")
    except aiohttp.ClientError as exc:
        lines.append(f"account {account}: {exc}")
    return "\n".join(lines)


async def wait_all_decided(session: aiohttp.ClientSession, url: str, ids: list[str], timeout_s: float = 120) -> dict:
    """All records, once none of them is pending; on time-out, says which are still pending."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        records = await statuses(session, url, ids)
        pending = [r for r in records.values() if r is not None and r["status"] == "pending"]
        if not pending:
            return records
        if asyncio.get_running_loop().time() > deadline:
            detail = await explain_pending(session, url, pending[0])
            raise AssertionError(f"{len(pending)} still pending after {timeout_s} s: {pending[:5]}\n{detail}")
        await asyncio.sleep(1.0)


async def assert_invariants(
    session: aiohttp.ClientSession,
    url: str,
    submitted: dict[str, dict[str, Any]],
    accounts: list[str],
    accepted: set[str],
) -> dict[str, dict[str, Any] | None]:
    """Every accepted transaction decided; balances equal applied ones counted once; money conserved."""
    records = await wait_all_decided(session, url, list(submitted))
    missing = sorted(tx_id for tx_id in accepted if records[tx_id] is None)
    assert not missing, f"accepted but unknown: {missing[:10]}"
    expected = dict.fromkeys(accounts, 0)
    deposits = withdrawals = 0
    for tx_id, record in records.items():
        if record is None or record["status"] != "applied":
            continue
        tx = submitted[tx_id]
        assert record["amount"] == tx["amount"]
        if "payer" in tx:
            expected[tx["payer"]] -= tx["amount"]
            expected[tx["payee"]] += tx["amount"]
        elif tx["kind"] == "deposit":
            expected[tx["account"]] += tx["amount"]
            deposits += tx["amount"]
        else:
            expected[tx["account"]] -= tx["amount"]
            withdrawals += tx["amount"]

    async def audit_quiet() -> dict | None:
        status, audit = await call(session, "GET", f"{url}/audit")
        return audit if status == 200 and audit["in_flight"] == 0 else None

    audit = await wait_for(audit_quiet, timeout_s=60)
    assert audit["ok"], audit["problems"]
    assert (audit["deposits"], audit["withdrawals"]) == (deposits, withdrawals)
    assert audit["balances"] == deposits - withdrawals
    await wait_for(lambda: balances_as_expected(session, url, expected), timeout_s=30)
    return records


async def balances_as_expected(session: aiohttp.ClientSession, url: str, expected: dict[str, int]) -> bool:
    """Whether every account's balance (its segments read together) is what its applied transactions make it.

    A reconciler move started after the audit above leaves its amount between two segments until its credit is
    applied (eventual consistency), so a mismatch is read again until the deadline; the last one is printed.
    """
    actual = {}
    for account in expected:
        status, body = await call(session, "GET", f"{url}/accounts/{account}")
        assert status == 200
        assert all(v >= 0 for v in body["segments"].values()), body
        actual[account] = body["balance"]
    differ = {account: (actual[account], value) for account, value in expected.items() if actual[account] != value}
    if differ:
        print(f"balances (actual, expected) that differ: {differ}")
    return not differ
