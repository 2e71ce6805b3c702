"""Bearer tokens at the edge: every public route but health, the API document and the live page needs one.

The middleware authenticates (401) and holds each route to a rule: admin only, unless the route is listed in
`SCOPED` with the scope a minted token needs there. What a scoped token may touch inside a route (its own
accounts) is checked by the view, which knows the body (`principal(request).require_accounts`).
"""

from __future__ import annotations

from typing import Any

import mode
import orjson
from aiohttp import web as aiohttp_web
from aiokafka.errors import KafkaError

from payments_app.domain.access import READ, TOKEN_PREFIX, TRANSFER, Forbidden, Keyring, Principal, Unauthorized
from payments_app.exits import stop_worker
from payments_app.runtime.token_log import TokenLog
from payments_app.service.app import app
from payments_app.service.topics import TOKENS_TOPIC, tokens_topic
from payments_app.settings import SETTINGS

#: routes anyone may call: probes, the API's own description and the live page (it holds no data: its calls need one)
OPEN_ROUTES = frozenset({"/health", "/health/ready", "/health/live", "/openapi.json", "/"})
#: routes a minted token may call with the given scope; every other route is the admin's
SCOPED = {
    ("GET", "/accounts/{account}"): READ,
    ("GET", "/accounts/{account}/transactions"): READ,
    ("GET", "/transactions/{tx_id}"): READ,
    ("POST", "/transfers"): TRANSFER,
}
RETRY_AFTER_S = 1


class TokenService(mode.Service):
    """The worker's keyring and the log it follows; the worker refuses to start without an admin token."""

    token_log: TokenLog | None = None  # (`log` is the service's logger)

    async def on_start(self) -> None:
        if SETTINGS.admin_token is None:
            stop_worker("PAYMENTS_ADMIN_TOKEN is not set: the worker refuses to serve an API nobody can secure")
        try:
            keyring = Keyring(SETTINGS.admin_token)
        except ValueError as exc:
            stop_worker(f"PAYMENTS_ADMIN_TOKEN is not usable: {exc}")
        await tokens_topic.maybe_declare()
        token_log = TokenLog(SETTINGS.bootstrap_servers, TOKENS_TOPIC, keyring)
        await token_log.start()
        self.token_log = token_log

    async def on_stop(self) -> None:
        if self.token_log is not None:
            await self.token_log.stop()

    @mode.Service.task
    async def _follow(self) -> None:
        if self.token_log is not None:
            await self.token_log.follow()


def tokens_loaded() -> bool:
    """The worker can check minted tokens: it has read every grant written before it started."""
    return TOKENS.token_log is not None and TOKENS.token_log.loaded


TOKENS = TokenService()
app.service(TOKENS)  # type: ignore[arg-type]  # Faust starts an instance as it would a class


def principal(request: Any) -> Principal:
    """The caller of a request the middleware let through."""
    return request["principal"]


def _refusal(status: int, code: str, detail: str, **headers: str) -> aiohttp_web.Response:
    body = orjson.dumps({"error": code, "detail": detail})
    return aiohttp_web.Response(status=status, body=body, content_type="application/json", headers=headers)


class TokensUnreadable(RuntimeError):
    """The tokens topic could not be read to its end in time: the token may be valid, so 503, not 401."""


async def authenticate(token_log: TokenLog, authorization: str | None) -> Principal:
    """The caller; a minted token this worker has not read yet is looked for up to the tokens topic's end."""
    try:
        return token_log.keyring.authenticate(authorization)
    except Unauthorized:
        if TOKEN_PREFIX not in (authorization or ""):
            raise
    try:
        await token_log.catch_up()
    except (TimeoutError, KafkaError) as exc:
        raise TokensUnreadable(f"the tokens could not be read up to date: {exc!r}") from exc
    return token_log.keyring.authenticate(authorization)


@aiohttp_web.middleware
async def require_token(request: aiohttp_web.Request, handler: Any) -> aiohttp_web.StreamResponse:
    route = request.match_info.route.resource
    canonical = route.canonical if route is not None else request.path
    if canonical in OPEN_ROUTES:
        return await handler(request)
    token_log = TOKENS.token_log
    if token_log is None:
        return _refusal(503, "starting", "the worker is starting", **{"Retry-After": str(RETRY_AFTER_S)})
    try:
        caller = await authenticate(token_log, request.headers.get("Authorization"))
    except TokensUnreadable as exc:
        return _refusal(503, "unavailable", str(exc), **{"Retry-After": str(RETRY_AFTER_S)})
    except Unauthorized as exc:
        if not token_log.loaded:
            detail = "the worker is still reading the tokens; try again"
            return _refusal(503, "starting", detail, **{"Retry-After": str(RETRY_AFTER_S)})
        return _refusal(401, "unauthorized", str(exc), **{"WWW-Authenticate": 'Bearer realm="payments"'})
    scope = SCOPED.get((request.method, canonical))
    try:
        if scope is None:
            caller.require_admin()
        else:
            caller.require_scope(scope)
    except Forbidden as exc:
        return _refusal(403, "forbidden", str(exc))
    request["principal"] = caller
    return await handler(request)


app.web.web_app.middlewares.append(require_token)
