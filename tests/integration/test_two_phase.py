"""Two-phase transfers through the HTTP API on real workers: reserve, post in part, void, expire; the answers to
calls that repeat or come too late; and posts, voids and an expiry across a worker's SIGKILL and the takeover of its
partitions, with balances, statuses and the audit checked afterwards."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from payments_app.domain.money import partition_of
from tests.integration.cluster import PARTITIONS, AppCluster, admin_session, call, settled_account, wait_for

pytestmark = pytest.mark.broker


async def open_funded(session: aiohttp.ClientSession, url: str, prefix: str, amount: int) -> tuple[str, str]:
    payer, payee = f"{prefix}-payer", f"{prefix}-payee"
    for account in (payer, payee):
        assert (await call(session, "POST", f"{url}/accounts", {"id": account}))[0] == 201
    deposit = {"id": f"{prefix}-fund", "account": payer, "amount": amount}
    assert (await call(session, "POST", f"{url}/deposits?wait=10", deposit))[1]["status"] == "applied"
    return payer, payee


async def reserve(
    session: aiohttp.ClientSession, url: str, tx_id: str, payer: str, payee: str, amount: int, timeout_s: int = 600
) -> dict[str, Any]:
    body = {"id": tx_id, "payer": payer, "payee": payee, "amount": amount, "pending": True, "timeout_s": timeout_s}
    status, record = await call(session, "POST", f"{url}/transfers?wait=10", body)
    assert status == 200 and record["status"] == "reserved", record
    return record  # type: ignore[no-any-return]


async def status_of(session: aiohttp.ClientSession, url: str, tx_id: str) -> str:
    return str((await call(session, "GET", f"{url}/transactions/{tx_id}"))[1]["status"])


async def test_a_reservation_is_posted_in_part_once_and_its_steps_show_in_the_history(session, urls) -> None:
    payer, payee = await open_funded(session, urls[0], "tp-a", 100)
    record = await reserve(session, urls[1], "tp-a-r1", payer, payee, 30)
    assert (record["kind"], record["posted"], record["timeout_s"]) == ("reservation", None, 600)
    account = await settled_account(session, urls[0], payer)
    assert (account["balance"], account["reserved"]) == (70, 30)

    status, posted = await call(session, "POST", f"{urls[0]}/transfers/tp-a-r1/post", {"amount": 10})
    assert status == 200 and (posted["status"], posted["posted"]) == ("posted", 10)
    assert await call(session, "POST", f"{urls[1]}/transfers/tp-a-r1/post", {"amount": 10}) == (200, posted)
    status, body = await call(session, "POST", f"{urls[1]}/transfers/tp-a-r1/void")
    assert status == 409 and (body["error"], body["status"]) == ("not_reserved", "posted")
    status, body = await call(session, "POST", f"{urls[1]}/transfers/tp-a-r1/post")  # all of it: not this call
    assert status == 409 and body["record"] == posted
    assert (await settled_account(session, urls[1], payer))["balance"] == 90
    assert (await settled_account(session, urls[1], payee))["balance"] == 10

    status, history = await call(session, "GET", f"{urls[1]}/accounts/{payer}/transactions")
    steps = [(item["id"], item["status"], item["amount"]) for item in history["transactions"]]
    assert steps[:2] == [("tp-a-r1", "posted", 20), ("tp-a-r1", "reserved", -30)]
    status, history = await call(session, "GET", f"{urls[0]}/accounts/{payee}/transactions")
    assert [(i["id"], i["status"], i["amount"]) for i in history["transactions"]] == [("tp-a-r1", "posted", 10)]


async def test_a_void_gives_everything_back_an_expiry_too_and_the_audit_counts_what_is_held(session, urls) -> None:
    payer, payee = await open_funded(session, urls[0], "tp-b", 100)
    await reserve(session, urls[0], "tp-b-void", payer, payee, 40)
    await reserve(session, urls[0], "tp-b-lapse", payer, payee, 25, timeout_s=1)
    await reserve(session, urls[0], "tp-b-held", payer, payee, 5)
    status, body = await call(session, "GET", f"{urls[1]}/audit")
    assert status == 200 and body["ok"], body["problems"]
    assert body["reserved"] >= 70

    status, voided = await call(session, "POST", f"{urls[1]}/transfers/tp-b-void/void", {})
    assert status == 200 and voided["status"] == "voided"
    assert await call(session, "POST", f"{urls[0]}/transfers/tp-b-void/void") == (200, voided)

    async def expired() -> bool:
        return await status_of(session, urls[0], "tp-b-lapse") == "expired"

    await wait_for(expired, timeout_s=30)
    status, body = await call(session, "POST", f"{urls[0]}/transfers/tp-b-lapse/post")
    assert status == 409 and body["status"] == "expired"
    account = await settled_account(session, urls[1], payer)
    assert (account["balance"], account["reserved"]) == (95, 5)
    assert (await settled_account(session, urls[1], payee))["balance"] == 0


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/transfers", {"id": "tp-x1", "payer": "tp-c-payer", "payee": "tp-c-payee", "amount": 5, "timeout_s": 9},
         (422, "invalid_request")),
        ("/transfers", {"id": "tp-x2", "payer": "tp-c-payer", "payee": "tp-c-payee", "amount": 5, "pending": True,
                        "timeout_s": 0}, (422, "invalid_request")),
        ("/transfers", {"id": "tp-x3", "payer": "tp-c-payer", "payee": "tp-c-payee", "amount": 5, "pending": True,
                        "timeout_s": 2_592_001}, (422, "invalid_request")),
        ("/transfers", {"id": "tp-x4", "payer": "tp-c-payer", "payee": "tp-c-payee", "amount": 5, "pending": "yes"},
         (400, "malformed_request")),
        ("/transfers/tp-c-plain/post", None, (409, "not_pending")),
        ("/transfers/tp-c-plain/void", None, (409, "not_pending")),
        ("/transfers/tp-c-nobody/post", None, (404, "not_found")),
        ("/transfers/tp-c-held/post", {"amount": 6}, (422, "invalid_request")),
        ("/transfers/tp-c-held/post", {"amount": 1, "more": 2}, (400, "malformed_request")),
        ("/transfers/tp-c-held/void", {"amount": 1}, (400, "malformed_request")),
    ],
)  # fmt: skip
async def test_bad_two_phase_calls_get_a_json_error_and_change_nothing(session, urls, path, body, expected) -> None:
    status, _ = await call(session, "GET", f"{urls[0]}/accounts/tp-c-payer")
    if status == 404:
        payer, payee = await open_funded(session, urls[0], "tp-c", 50)
        plain = {"id": "tp-c-plain", "payer": payer, "payee": payee, "amount": 1}
        assert (await call(session, "POST", f"{urls[0]}/transfers?wait=10", plain))[1]["status"] == "applied"
        await reserve(session, urls[0], "tp-c-held", payer, payee, 5)
    status, answer = await call(session, "POST", f"{urls[1]}{path}", body)
    assert (status, answer["error"]) == expected, answer
    account = await settled_account(session, urls[1], "tp-c-payer")
    assert (account["balance"], account["reserved"]) == (44, 5)
    assert await status_of(session, urls[1], "tp-c-held") == "reserved"


async def test_posts_voids_and_an_expiry_across_a_worker_kill_and_the_takeover(cluster: AppCluster) -> None:
    """The reservations live in the partitions of the worker that is killed; the survivor takes them over and
    posts, voids and expires them; the killed worker comes back and a post repeated there answers the same."""
    survivor, victim = cluster.add_worker(), cluster.add_worker()
    cluster.wait_ready()
    async with admin_session(timeout=aiohttp.ClientTimeout(total=30)) as session:
        payer, payee = await open_funded(session, survivor.url, "tk", 1_000)
        victims = set((await call(session, "GET", f"{victim.url}/health"))[1]["partitions"])
        assert victims, "the second worker owns no partition"
        ids = iter(f"tk-{n}" for n in range(1_000) if partition_of(f"tk-{n}", PARTITIONS) in victims)
        before, keep, drop, lapse = next(ids), next(ids), next(ids), next(ids)
        for tx_id, amount in ((before, 40), (keep, 100), (drop, 200)):
            await reserve(session, survivor.url, tx_id, payer, payee, amount)
        await reserve(session, survivor.url, lapse, payer, payee, 300, timeout_s=15)
        assert (await call(session, "POST", f"{survivor.url}/transfers/{before}/post"))[1]["status"] == "posted"

        victim.kill()
        status, kept = await call(session, "POST", f"{survivor.url}/transfers/{keep}/post", {"amount": 25}, 60)
        assert status == 200 and (kept["status"], kept["posted"]) == ("posted", 25), kept
        status, dropped = await call(session, "POST", f"{survivor.url}/transfers/{drop}/void", None, 60)
        assert status == 200 and dropped["status"] == "voided", dropped

        async def lapsed() -> bool:
            return await status_of(session, survivor.url, lapse) == "expired"

        await wait_for(lapsed, timeout_s=60)
        victim.start()
        await asyncio.to_thread(victim.wait_ready)
        assert await call(session, "POST", f"{victim.url}/transfers/{keep}/post", {"amount": 25}, 60) == (200, kept)
        for url in (survivor.url, victim.url):
            payer_account = await settled_account(session, url, payer)
            assert (payer_account["balance"], payer_account["reserved"]) == (1_000 - 40 - 25, 0)
            assert (await settled_account(session, url, payee))["balance"] == 65
        status, audit = await call(session, "GET", f"{victim.url}/audit")
        assert status == 200 and audit["ok"] and audit["reserved"] == 0, audit
