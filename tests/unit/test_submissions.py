"""Submissions handed to other workers, coalesced per owner and wait, with the owner's HTTP answer replaced by a
function: one request for all that arrive together, each answered with its own part or error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from payments_app.service import owners as owners_module
from payments_app.service.errors import Backlogged, NotOwner
from payments_app.service.intake import Verdict
from payments_app.service.owners import Submissions

URL_A = "http://a:6067/internal/submit"
URL_B = "http://b:6067/internal/submit"


def submission(partition: int, wait_s: float = 0.0) -> dict[str, Any]:
    return {"partition": partition, "transactions": [{"kind": "transfer", "id": f"t{partition}"}], "wait_s": wait_s}


class FakeOwners:
    """Answers each submission with its partition, refuses partition 7 (not owner) and 8 (backlogged)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[dict[str, Any]]]] = []
        self.down = False

    async def post(self, url: str, payload: list[dict[str, Any]], timeout_s: float) -> list[dict[str, Any]]:
        self.requests.append((url, payload))
        if self.down:
            raise ConnectionError("owner unreachable")
        refusals = {7: {"error": "not_owner", "detail": "p7"}, 8: {"error": "backlogged", "detail": "p8"}}
        return [
            refusals.get(item["partition"], {"answers": [["submitted", {"p": item["partition"]}]]}) for item in payload
        ]


@pytest.fixture
def owners(monkeypatch: pytest.MonkeyPatch) -> FakeOwners:
    fake = FakeOwners()
    monkeypatch.setattr(owners_module, "post_json", fake.post)
    return fake


async def test_submissions_arriving_together_share_one_request_per_owner_and_wait(owners: FakeOwners) -> None:
    submissions = Submissions(linger_s=0.005)
    answers = await asyncio.gather(
        submissions.post(URL_A, submission(1), 5), submissions.post(URL_A, submission(2), 5),
        submissions.post(URL_B, submission(3), 5), submissions.post(URL_A, submission(4, wait_s=2.0), 5),
    )  # fmt: skip
    assert answers == [[(Verdict.SUBMITTED, {"p": p})] for p in (1, 2, 3, 4)]
    assert sorted((url, [item["partition"] for item in payload]) for url, payload in owners.requests) == [
        (URL_A, [1, 2]), (URL_A, [4]), (URL_B, [3]),
    ]  # fmt: skip


async def test_each_submission_learns_its_own_refusal(owners: FakeOwners) -> None:
    submissions = Submissions(linger_s=0.005)
    results = await asyncio.gather(
        submissions.post(URL_A, submission(7), 5), submissions.post(URL_A, submission(8), 5),
        submissions.post(URL_A, submission(1), 5), return_exceptions=True,
    )  # fmt: skip
    assert isinstance(results[0], NotOwner)
    assert isinstance(results[1], Backlogged)
    assert results[2] == [(Verdict.SUBMITTED, {"p": 1})]
    assert len(owners.requests) == 1


async def test_a_full_list_goes_at_once_and_a_failed_request_fails_all_of_its_submissions(owners: FakeOwners) -> None:
    submissions = Submissions(linger_s=60, max_items=2)  # only max_items can flush within the test
    assert await asyncio.gather(submissions.post(URL_A, submission(1), 5), submissions.post(URL_A, submission(2), 5))
    owners.down = True
    results = await asyncio.gather(
        submissions.post(URL_A, submission(1), 5), submissions.post(URL_A, submission(2), 5), return_exceptions=True
    )
    assert all(isinstance(result, ConnectionError) for result in results)
    assert [len(payload) for _, payload in owners.requests] == [2, 2]


def test_another_workers_refusals_become_named_errors_and_a_fault_there_is_not_retried() -> None:
    assert owners_module._answer_of(URL_A, 200, b'{"ok": 1}') == {"ok": 1}
    with pytest.raises(NotOwner, match="p3"):
        owners_module._answer_of(URL_A, 409, b'{"error": "not_owner", "detail": "p3"}')
    with pytest.raises(Backlogged, match="busy"):
        owners_module._answer_of(URL_A, 429, b'{"error": "backlogged", "detail": "busy"}')
    with pytest.raises(RuntimeError, match="answered 500") as fault:
        owners_module._answer_of(URL_A, 500, b"Internal Server Error")
    assert not isinstance(fault.value, NotOwner | Backlogged)
