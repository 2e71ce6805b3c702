"""The HTTP API as Faust web views. Views never write tables: they send commands to the transactions topic."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from faust.web import Request, Response, View

from payments_app.domain.access import READ, TRANSFER, Forbidden, mint, parse_grant_request
from payments_app.domain.commands import (
    ClientTransaction,
    OpenAccount,
    PostReserved,
    Resolution,
    VoidReserved,
    to_dict,
)
from payments_app.domain.invariants import AuditReport, audit_ledger
from payments_app.domain.ledger import POSTED, RESERVATION, RESERVED, VOIDED, PartitionMeta, TxRecord, segment_key
from payments_app.domain.money import InvalidInput, partition_of, require_id
from payments_app.domain.routing import BASELINE, decided_in
from payments_app.domain.segments import Segment
from payments_app.runtime.token_log import TokenLog
from payments_app.service.app import GROUP_LEASE, app
from payments_app.service.composition import INTAKE, LEDGER, READS, owned_partitions
from payments_app.service.errors import Backlogged, Unavailable
from payments_app.service.intake import Answer, Verdict
from payments_app.service.owners import (
    REQUEST_TIMEOUT_S,
    SUBMISSIONS,
    at_owner,
    audit_all,
    read_ledger,
    wait_for_values,
)
from payments_app.service.publish import send_commands
from payments_app.service.watchdog import routed_partitions
from payments_app.settings import SETTINGS
from web.auth import RETRY_AFTER_S, TOKENS, principal, tokens_loaded
from web.internal import INTERNAL_SERVER
from web.middleware import OPENAPI_PATH
from web.parsing import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    parse_deposit,
    parse_history_query,
    parse_json,
    parse_new_account,
    parse_post,
    parse_transfers,
    parse_wait,
    parse_withdrawal,
)

log = logging.getLogger(__name__)


def error(view: View, status: int, code: str, detail: str) -> Response:
    return view.json({"error": code, "detail": detail}, status=status)


def retry_later(view: View, status: int, code: str, detail: str) -> Response:
    response = error(view, status, code, detail)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def read_body(request: Request, optional: bool = False) -> Any:
    """The parsed JSON body, refusing more than MAX_BODY_BYTES before reading it all; None for an empty body if it
    is `optional`."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    while chunk := await request.content.read(2**16):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    if optional and not chunks:
        return None
    return parse_json(b"".join(chunks))


class ApiView(View):
    """Turns the domain's and the edge's exceptions into JSON errors; nothing has been applied when they happen."""

    async def dispatch(self, request: Any) -> Any:
        try:
            return await super().dispatch(request)
        except BodyTooLarge as exc:
            return error(self, 413, "payload_too_large", str(exc))
        except Forbidden as exc:
            return error(self, 403, "forbidden", str(exc))
        except InvalidInput as exc:
            if exc.malformed:
                return error(self, 400, "malformed_request", exc.detail)
            return error(self, 422, "invalid_request", exc.detail)
        except Unavailable as exc:
            log.warning("503 for %s %s: %s", request.method, request.path, exc)
            return retry_later(self, 503, "unavailable", str(exc))
        except Backlogged as exc:
            return retry_later(self, 429, "backlogged", f"too many submissions wait for a decision: {exc}")


#: a partition's part of a submission not taken: retry it with the same ids (an `Unavailable` part may have reached
#: its owner before the time-out)
Refusal = Backlogged | Unavailable
#: a single submission's answer by its verdict (`service.intake`)
HTTP_STATUS = {Verdict.SUBMITTED: 202, Verdict.KNOWN: 200, Verdict.CONFLICT: 409}


async def submit(view: View, request: Request, transactions: list[ClientTransaction], as_array: bool) -> Response:
    """Hand each partition's transactions to its owner (`intake`), which applies the new ones and answers known
    ids from its own records; with `?wait=` the answer waits for the decisions. An array refused in part (some
    partitions' owners backlogged or out of reach) answers those items `refused`, to be sent again with the same
    ids; refused whole, it answers 429 or 503 like a single transaction."""
    wait_s = parse_wait(request.query.get("wait"))
    by_partition: dict[int, list[int]] = defaultdict(list)
    for index, tx in enumerate(transactions):
        by_partition[decided_in(tx, SETTINGS.partitions, SETTINGS.model)].append(index)

    async def at_partition(partition: int, batch: list[ClientTransaction]) -> list[Answer]:
        payload = {"partition": partition, "transactions": [to_dict(tx) for tx in batch], "wait_s": wait_s}
        local = partial(INTAKE.submit, partition, batch, wait_s)
        return await at_owner(partition, local, "/internal/submit", payload, wait_s + REQUEST_TIMEOUT_S,
                              post=SUBMISSIONS.post)  # fmt: skip

    answers = await answers_by_partition(transactions, by_partition, at_partition)
    refusals = [answer for answer in answers if isinstance(answer, Refusal)]
    if len(refusals) == len(answers):
        raise next((r for r in refusals if isinstance(r, Unavailable)), refusals[0])
    if not as_array:
        verdict, body = answers[0]
        return view.json(body, status=HTTP_STATUS[verdict])
    items = [array_item(answer, tx) for answer, tx in zip(answers, transactions, strict=True)]
    decided = all(item["status"] in ("applied", "rejected", "conflict") for item in items)
    response = view.json(items, status=200 if decided else 202)
    if refusals:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


async def answers_by_partition(
    transactions: list[ClientTransaction], by_partition: dict[int, list[int]],
    at_partition: Callable[[int, list[ClientTransaction]], Awaitable[list[Answer]]],
) -> list[Answer | Refusal]:  # fmt: skip
    """Each transaction's answer from its partition's owner, or the refusal of its whole partition. Every partition
    is asked to the end: one partition refused does not hide what the others' owners already applied."""
    answers: list[Answer | Refusal] = [(Verdict.KNOWN, {})] * len(transactions)  # each replaced below

    async def ask(partition: int, indexes: list[int]) -> None:
        owner_answers: list[Answer | Refusal]
        try:
            owner_answers = list(await at_partition(partition, [transactions[i] for i in indexes]))
        except (Backlogged, Unavailable) as refusal:
            owner_answers = [refusal] * len(indexes)
        for i, answer in zip(indexes, owner_answers, strict=True):
            answers[i] = answer

    await asyncio.gather(*(ask(partition, indexes) for partition, indexes in by_partition.items()))
    return answers


def array_item(answer: Answer | Refusal, tx: ClientTransaction) -> dict[str, Any]:
    """An array's answer per item, kept short (arrays hold up to 10,000): id, status, and why if not applied."""
    if isinstance(answer, Refusal):
        code = "unavailable" if isinstance(answer, Unavailable) else "backlogged"
        return {"id": tx.id, "status": "refused", "error": code, "detail": str(answer)}
    verdict, body = answer
    if verdict == Verdict.CONFLICT:
        return {"id": tx.id, "status": "conflict", **body}
    item = {"id": body["id"], "status": body["status"]}
    if body.get("reason") is not None:
        item["reason"] = body["reason"]
    return item


@app.page("/accounts")
class Accounts(ApiView):
    async def post(self, request: Request) -> Response:
        account = parse_new_account(await read_body(request))
        home = partition_of(account, SETTINGS.partitions)
        (existing,) = await read_ledger([(home, segment_key(account))])
        if existing is None:
            token = uuid.uuid4().hex
            await send_commands({p: [OpenAccount(account, token)] for p in range(SETTINGS.partitions)})
            # Open in every partition before 201: a submission is applied at its owner at once, not behind this in
            # the partition's log, and must find the account there.
            segments = await wait_for_values([(p, segment_key(account)) for p in range(SETTINGS.partitions)])
            if Segment.from_stored(segments[home]).opened_by == token:
                return self.json({"id": account}, status=201)
        return error(self, 409, "account_exists", f"account {account!r} already exists")


async def account_segments(account: str) -> list[Any] | None:
    """An account's segment in every partition, in its stored form (None where it has none); None for an account
    that does not exist."""
    segments = await read_ledger([(p, segment_key(account)) for p in range(SETTINGS.partitions)])
    return None if all(segment is None for segment in segments) else segments


@app.page("/accounts/{account}")
class Account(ApiView):
    async def get(self, request: Request, account: str) -> Response:
        require_id(account, "account")
        principal(request).require_accounts(READ, {account}, "read account")
        segments = await account_segments(account)
        if segments is None:
            return error(self, 404, "not_found", f"no account {account!r}")
        present = [Segment() if s is None else Segment.from_stored(s) for s in segments]
        return self.json(
            {
                "id": account,
                "balance": sum(s.balance for s in present),
                "reserved": sum(s.reserved for s in present),
                "segments": {str(p): s.balance for p, s in enumerate(present)},
                "in_flight": sum(s.moved_out for s in present) - sum(s.moved_in for s in present),
            }
        )


@app.page("/accounts/{account}/transactions")
class AccountHistory(ApiView):
    """An account's decided transactions, newest first, merged from every partition that holds a segment of it;
    `?limit=` per page and `?cursor=` from the page before."""

    async def get(self, request: Request, account: str) -> Response:
        require_id(account, "account")
        principal(request).require_accounts(READ, {account}, "read account")
        limit, cursor = parse_history_query(request.query.get("limit"), request.query.get("cursor"))
        if await account_segments(account) is None:
            return error(self, 404, "not_found", f"no account {account!r}")

        async def at_partition(partition: int) -> list[list[Any]]:
            async def local() -> list[list[Any]]:
                return READS.account_history(partition, account, cursor, limit + 1)

            payload = {"partition": partition, "account": account, "before": cursor, "limit": limit + 1}
            return await at_owner(partition, local, "/internal/history", payload)

        pages = await asyncio.gather(*map(at_partition, range(SETTINGS.partitions)))
        merged = sorted((entry for page in pages for entry in page), key=lambda entry: entry[0], reverse=True)
        page = merged[:limit]
        next_cursor = page[-1][0] if len(merged) > limit else None  # one past a page, from each partition
        return self.json({"transactions": [history_item(item) for _, item in page], "next_cursor": next_cursor})


def history_item(item: list[Any]) -> dict[str, Any]:
    tx_id, kind, amount, counterparty, status, reason, decided_ms = item
    decided_at = datetime.fromtimestamp(decided_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return {"id": tx_id, "kind": kind, "amount": amount, "counterparty": counterparty, "status": status,
            "reason": reason, "decided_at": decided_at.replace("+00:00", "Z")}  # fmt: skip


@app.page("/deposits")
class Deposits(ApiView):
    async def post(self, request: Request) -> Response:
        return await submit(self, request, [parse_deposit(await read_body(request))], as_array=False)


@app.page("/withdrawals")
class Withdrawals(ApiView):
    async def post(self, request: Request) -> Response:
        return await submit(self, request, [parse_withdrawal(await read_body(request))], as_array=False)


@app.page("/transfers")
class Transfers(ApiView):
    async def post(self, request: Request) -> Response:
        transfers, as_array = parse_transfers(await read_body(request), time.time_ns() // 1_000_000)
        principal(request).require_accounts(TRANSFER, {t.payer for t in transfers}, "pay from account(s)")
        return await submit(self, request, list(transfers), as_array)


@app.page("/transfers/{tx_id}/post")
class PostTransfer(ApiView):
    """A reservation's second phase: pay the payee all of it, or `{"amount": N}` of it (the rest goes back)."""

    async def post(self, request: Request, tx_id: str) -> Response:
        require_id(tx_id, "id")
        return await resolve(self, request, parse_post(await read_body(request, optional=True), tx_id))


@app.page("/transfers/{tx_id}/void")
class VoidTransfer(ApiView):
    """A reservation's second phase: give all of it back to the payer."""

    async def post(self, request: Request, tx_id: str) -> Response:
        require_id(tx_id, "id")
        if await read_body(request, optional=True) not in (None, {}):
            raise InvalidInput("a void takes no fields: send no body, or `{}`", malformed=True)
        return await resolve(self, request, VoidReserved(tx_id))


async def resolve(view: View, request: Request, command: Resolution) -> Response:
    """Post or void a reservation at the owner of the partition that decided it, if the caller may pay from its
    payer. The same call again answers the same record; any other call on a reservation no longer reserved, or on
    a transaction that is not one, answers 409 naming its status."""
    found = await find_transaction(command.id, 0.0)
    if found is None:
        return error(view, 404, "not_found", f"no transaction {command.id!r}")
    partition, record = found
    caller = principal(request)
    caller.require_any_account(READ, TxRecord.from_dict(record).accounts, f"read transaction {command.id!r}")
    if record["kind"] != RESERVATION:
        return error(view, 409, "not_pending", f"{command.id!r} is a {record['kind']}, not a pending transfer")
    caller.require_accounts(TRANSFER, {record["payer"]}, "pay from account(s)")
    if isinstance(command, PostReserved) and (command.amount or 0) > record["amount"]:
        raise InvalidInput(f"`amount` must be at most the {record['amount']} reserved", malformed=False)
    if record["status"] == RESERVED:

        async def local() -> dict[str, Any]:
            return {"record": await INTAKE.resolve(partition, command)}

        payload = {"partition": partition, "command": to_dict(command)}
        record = (await at_owner(partition, local, "/internal/resolve", payload))["record"] or record
    if resolved_by(record, command):
        return view.json(record)
    return view.json({"error": "not_reserved", "status": record["status"], "record": record,
                      "detail": f"transfer {command.id!r} is {record['status']}"}, status=409)  # fmt: skip


def resolved_by(record: dict[str, Any], command: Resolution) -> bool:
    """Whether the reservation is as `command` leaves it: voided, or posted with its amount (all by default)."""
    if isinstance(command, VoidReserved):
        return bool(record["status"] == VOIDED)
    return record["status"] == POSTED and record["posted"] == (command.amount or record["amount"])


@app.page("/transactions/{tx_id}")
class Transaction(ApiView):
    async def get(self, request: Request, tx_id: str) -> Response:
        require_id(tx_id, "id")
        found = await find_transaction(tx_id, parse_wait(request.query.get("wait")))
        if found is None:
            return error(self, 404, "not_found", f"no transaction {tx_id!r}")
        _, record = found
        principal(request).require_any_account(READ, TxRecord.from_dict(record).accounts, f"read transaction {tx_id!r}")
        return self.json(record)


async def find_transaction(tx_id: str, wait_s: float) -> tuple[int, dict[str, Any]] | None:
    """The partition holding the transaction's record, and the record, waited for up to `wait_s` if pending."""

    async def at_partition(partition: int) -> tuple[int, dict[str, Any] | None]:
        async def local() -> dict[str, Any]:
            return {"record": await INTAKE.lookup(partition, tx_id, wait_s)}

        payload = {"partition": partition, "id": tx_id, "wait_s": wait_s}
        answer = await at_owner(partition, local, "/internal/lookup", payload, wait_s + REQUEST_TIMEOUT_S)
        return partition, answer["record"]

    found = [(p, r) for p, r in await asyncio.gather(*map(at_partition, status_partitions(tx_id))) if r is not None]
    return max(found, key=lambda held: held[1]["status"] != "pending") if found else None


def status_partitions(tx_id: str) -> list[int]:
    """Where a transaction's status may be: its id's partition, or in the baseline its payer's (any partition)."""
    if SETTINGS.model == BASELINE:
        return list(range(SETTINGS.partitions))
    return [partition_of(tx_id, SETTINGS.partitions)]


@app.page("/audit")
class Audit(ApiView):
    async def get(self, request: Request) -> Response:
        items = await audit_all()
        per_partition = {
            item["partition"]: (PartitionMeta.from_dict(item["meta"]), AuditReport.from_dict(item["report"]))
            for item in items
        }
        total = audit_ledger(per_partition)
        missing = sorted(set(range(SETTINGS.partitions)) - set(per_partition))
        if missing:
            total.problems.append(f"partitions {missing} were not audited (no owner answered)")
        return self.json({**total.to_dict(), "partitions": items})


@app.page("/health")
class Health(View):
    async def get(self, request: Request) -> Response:
        if LEDGER.assignment_known and not GROUP_LEASE.held():
            return error(self, 503, "no_group_contact", "the worker has not heard from the Kafka group lately")
        if not READS.is_ready():
            return error(self, 503, "starting", "the worker is joining the group or opening its ledger partitions")
        if not edge_started():
            return error(self, 503, "starting", "the worker is reading its tokens or opening its internal port")
        if routed_partitions() != owned_partitions():
            return error(self, 503, "starting", "the worker is routed partitions it does not consume yet")
        return self.json({"status": "ok", "partitions": sorted(owned_partitions())})


@app.page("/health/ready")
class Ready(View):
    """Readiness: the worker has joined the group, its ledger opened and it hears from the group. Unlike `/health`
    it stays ok during an ordinary rebalance, so a rebalance does not take every worker out of the Service."""

    async def get(self, request: Request) -> Response:
        if not LEDGER.assignment_known:
            return error(self, 503, "starting", "the worker has not joined the group yet")
        if not GROUP_LEASE.held():
            return error(self, 503, "no_group_contact", "the worker has not heard from the Kafka group lately")
        if not edge_started():
            return error(self, 503, "starting", "the worker is reading its tokens or opening its internal port")
        return self.json({"status": "ready"})


def edge_started() -> bool:
    """Its bearer tokens are read and the other workers can reach its internal port."""
    return tokens_loaded() and INTERNAL_SERVER.listening


@app.page("/health/live")
class Live(View):
    """Liveness: the event loop answers (a worker that cannot go on exits by itself: `payments_app.exits`)."""

    async def get(self, request: Request) -> Response:
        return self.json({"status": "alive"})


@app.page("/tokens")
class MintToken(ApiView):
    """Admin only: mint a token that reads, or pays from, the given accounts. Its secret is in this answer only."""

    async def post(self, request: Request) -> Response:
        scopes, accounts = parse_grant_request(await read_body(request))
        grant, token = mint(scopes, accounts)
        await token_log().publish(grant)
        return self.json({**grant.public(), "token": token}, status=201)


@app.page("/tokens/{token_id}")
class RevokeToken(ApiView):
    async def delete(self, request: Request, token_id: str) -> Response:
        tokens = token_log()
        if tokens.keyring.get(token_id) is None:
            return error(self, 404, "not_found", f"no token {token_id!r}")
        await tokens.revoke(token_id)
        return self.json({"id": token_id, "revoked": True})


def token_log() -> TokenLog:
    if TOKENS.token_log is None:
        raise Unavailable("the worker is starting")
    return TOKENS.token_log


@app.page("/openapi.json")
class OpenApi(View):
    async def get(self, request: Request) -> Response:
        return self.bytes(OPENAPI_PATH.read_bytes(), content_type="application/json")
