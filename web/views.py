"""The HTTP API as Faust web views. Views never write tables: they send commands to the transactions topic."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web as aiohttp_web
from faust.web import Request, Response, View

from payments_app.app import app
from payments_app.domain.access import READ, TRANSFER, Forbidden, mint, parse_grant_request
from payments_app.domain.commands import ClientTransaction, Command, OpenAccount
from payments_app.domain.invariants import AuditReport, audit_ledger
from payments_app.domain.ledger import PartitionMeta, TxRecord, segment_key, transaction_key
from payments_app.domain.money import InvalidInput, partition_of, require_id
from payments_app.domain.routing import BASELINE, decided_in
from payments_app.fanout import Unavailable, audit_all, read_ledger, wait_for_value
from payments_app.queries import is_ready, owned_partitions
from payments_app.runtime.lease import GROUP_LEASE
from payments_app.runtime.token_log import TokenLog
from payments_app.runtime.wiring import LEDGER
from payments_app.sending import SUBMISSIONS, send_commands
from payments_app.settings import SETTINGS
from payments_app.watchdog import routed_partitions
from web.auth import TOKENS, principal, tokens_loaded
from web.internal import INTERNAL_SERVER
from web.parsing import (
    MAX_BODY_BYTES,
    BodyTooLarge,
    parse_deposit,
    parse_json,
    parse_new_account,
    parse_transfers,
    parse_withdrawal,
)

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
log = logging.getLogger(__name__)


@aiohttp_web.middleware
async def json_errors(request: aiohttp_web.Request, handler: Any) -> aiohttp_web.StreamResponse:
    """aiohttp's own answers (unknown path, wrong method) as JSON errors like ours."""
    try:
        return await handler(request)
    except aiohttp_web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        body = orjson.dumps({"error": code, "detail": f"{request.method} {request.path}: {exc.reason}"})
        return aiohttp_web.Response(status=exc.status, body=body, content_type="application/json")


app.web.web_app.middlewares.append(json_errors)


def error(view: View, status: int, code: str, detail: str) -> Response:
    return view.json({"error": code, "detail": detail}, status=status)


async def read_body(request: Request) -> Any:
    """The parsed JSON body, refusing more than MAX_BODY_BYTES before reading it all."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    while chunk := await request.content.read(2**16):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return parse_json(b"".join(chunks))


class ApiView(View):
    """Turns the domain's and the edge's exceptions into JSON errors; nothing has been sent when they happen."""

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
            return error(self, 503, "unavailable", str(exc))


async def submit(view: View, transactions: list[ClientTransaction], as_array: bool) -> Response:
    """Send the new ones; answer the first submission's status for ids already known."""
    partitions = [decided_in(tx, SETTINGS.partitions, SETTINGS.model) for tx in transactions]
    rows = await read_ledger([(p, transaction_key(tx.id)) for p, tx in zip(partitions, transactions, strict=True)])
    known = [None if row is None else TxRecord.from_row(row).to_dict() for row in rows]
    new: dict[int, list[Command]] = defaultdict(list)
    results: list[dict[str, Any]] = []
    for tx, partition, record in zip(transactions, partitions, known, strict=True):
        if record is None:
            new[partition].append(tx)
            results.append({"id": tx.id, "status": "pending"})
        else:
            results.append(record if not as_array else {"id": tx.id, "status": record["status"]})
    await SUBMISSIONS.submit(new)
    if as_array:
        return view.json(results, status=202)
    return view.json(results[0], status=200 if known[0] is not None else 202)


@app.page("/accounts")
class Accounts(ApiView):
    async def post(self, request: Request) -> Response:
        account = parse_new_account(await read_body(request))
        key = (partition_of(account, SETTINGS.partitions), segment_key(account))
        (existing,) = await read_ledger([key])
        if existing is None:
            token = uuid.uuid4().hex
            await send_commands({p: [OpenAccount(account, token)] for p in range(SETTINGS.partitions)})
            existing = await wait_for_value(key)
            if existing.get("opened_by") == token:
                return self.json({"id": account}, status=201)
        return error(self, 409, "account_exists", f"account {account!r} already exists")


@app.page("/accounts/{account}")
class Account(ApiView):
    async def get(self, request: Request, account: str) -> Response:
        require_id(account, "account")
        principal(request).require_accounts(READ, {account}, "read account")
        segments = await read_ledger([(p, segment_key(account)) for p in range(SETTINGS.partitions)])
        if all(segment is None for segment in segments):
            return error(self, 404, "not_found", f"no account {account!r}")
        present = [s or {"balance": 0, "moved_in": 0, "moved_out": 0} for s in segments]
        return self.json(
            {
                "id": account,
                "balance": sum(s["balance"] for s in present),
                "segments": {str(p): s["balance"] for p, s in enumerate(present)},
                "in_flight": sum(s["moved_out"] for s in present) - sum(s["moved_in"] for s in present),
            }
        )


@app.page("/deposits")
class Deposits(ApiView):
    async def post(self, request: Request) -> Response:
        return await submit(self, [parse_deposit(await read_body(request))], as_array=False)


@app.page("/withdrawals")
class Withdrawals(ApiView):
    async def post(self, request: Request) -> Response:
        return await submit(self, [parse_withdrawal(await read_body(request))], as_array=False)


@app.page("/transfers")
class Transfers(ApiView):
    async def post(self, request: Request) -> Response:
        transfers, as_array = parse_transfers(await read_body(request))
        principal(request).require_accounts(TRANSFER, {t.payer for t in transfers}, "pay from account(s)")
        return await submit(self, list(transfers), as_array)


@app.page("/transactions/{tx_id}")
class Transaction(ApiView):
    async def get(self, request: Request, tx_id: str) -> Response:
        require_id(tx_id, "id")
        rows = await read_ledger([(p, transaction_key(tx_id)) for p in status_partitions(tx_id)])
        row = next((r for r in rows if r is not None), None)
        if row is None:
            return error(self, 404, "not_found", f"no transaction {tx_id!r}")
        record = TxRecord.from_row(row)
        principal(request).require_any_account(READ, record.accounts, f"read transaction {tx_id!r}")
        return self.json(record.to_dict())


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
        failure = LEDGER.failed()
        if failure is not None:
            return error(self, 503, "ledger_failed", f"a ledger partition could not be opened: {failure!r}")
        if LEDGER.assignment_known and not GROUP_LEASE.held():
            return error(self, 503, "no_group_contact", "the worker has not heard from the Kafka group lately")
        if not is_ready():
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
        failure = LEDGER.failed()
        if failure is not None:
            return error(self, 503, "ledger_failed", f"a ledger partition could not be opened: {failure!r}")
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
    """Liveness: the event loop answers and no ledger partition failed to open (a restart is the cure then)."""

    async def get(self, request: Request) -> Response:
        failure = LEDGER.failed()
        if failure is not None:
            return error(self, 503, "ledger_failed", f"a ledger partition could not be opened: {failure!r}")
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
