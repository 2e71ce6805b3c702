"""Who may do what: bearer tokens, their grants, and the checks the API makes before it sends anything.

A token is `pt_<id>.<secret>`. Only a grant is kept: the id, the SHA-256 of the secret, the scopes and the
accounts. The secret is shown once, when the token is minted, and can not be recovered from a grant. The admin
token is configured (a Secret in Kubernetes) and never stored by us. Checks compare digests of equal length with
`hmac.compare_digest`, so their time does not depend on how much of a guess is right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from payments_app.domain.money import InvalidInput, require_id

READ = "read"
TRANSFER = "transfer"
SCOPES = (READ, TRANSFER)
TOKEN_PREFIX = "pt_"
MIN_ADMIN_TOKEN_LENGTH = 32
MAX_ACCOUNTS_PER_TOKEN = 1_000
_ID_BYTES = 8
_SECRET_BYTES = 32


class Unauthorized(Exception):
    """No token, or one that is not valid (HTTP 401)."""


class Forbidden(Exception):
    """A valid token that may not do this (HTTP 403)."""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Grant:
    """What a minted token may do; `secret_sha256` identifies its secret without revealing it."""

    id: str
    secret_sha256: str
    scopes: frozenset[str]
    accounts: frozenset[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "secret_sha256": self.secret_sha256,
            "scopes": sorted(self.scopes),
            "accounts": sorted(self.accounts),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grant:
        return cls(data["id"], data["secret_sha256"], frozenset(data["scopes"]), frozenset(data["accounts"]))

    def public(self) -> dict[str, Any]:
        """The grant as an API client sees it (no digest)."""
        return {"id": self.id, "scopes": sorted(self.scopes), "accounts": sorted(self.accounts)}


def mint(scopes: frozenset[str], accounts: frozenset[str]) -> tuple[Grant, str]:
    """A new grant and the one token that carries it (to show once, never to keep)."""
    token_id = secrets.token_hex(_ID_BYTES)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return Grant(token_id, digest(secret), scopes, accounts), f"{TOKEN_PREFIX}{token_id}.{secret}"


def parse_grant_request(data: Any) -> tuple[frozenset[str], frozenset[str]]:
    """`{"scopes": [...], "accounts": [...]}`: at least one known scope, 1..1,000 valid account ids."""
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object", malformed=True)
    unknown = sorted(set(data) - {"scopes", "accounts"})
    if unknown:
        raise InvalidInput(f"body has unknown field(s) {', '.join(f'`{u}`' for u in unknown)}", malformed=True)
    scopes, accounts = data.get("scopes"), data.get("accounts")
    if not isinstance(scopes, list) or not isinstance(accounts, list):
        raise InvalidInput("`scopes` and `accounts` must be arrays", malformed=True)
    if not scopes or any(scope not in SCOPES for scope in scopes):
        raise InvalidInput(f"`scopes` must hold one or more of {', '.join(SCOPES)}", malformed=False)
    if not 1 <= len(accounts) <= MAX_ACCOUNTS_PER_TOKEN:
        raise InvalidInput(f"`accounts` must hold 1 to {MAX_ACCOUNTS_PER_TOKEN} account ids", malformed=False)
    return frozenset(scopes), frozenset(require_id(account, "accounts[]") for account in accounts)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the admin, or the holder of one grant."""

    grant: Grant | None

    @property
    def is_admin(self) -> bool:
        return self.grant is None

    def require_admin(self) -> None:
        if self.grant is not None:
            raise Forbidden("only the admin token may do this")

    def require_scope(self, scope: str) -> None:
        if self.grant is not None and scope not in self.grant.scopes:
            raise Forbidden(f"this token lacks the `{scope}` scope")

    def require_accounts(self, scope: str, accounts: set[str], what: str) -> None:
        """The scope, and every one of `accounts` among the token's."""
        self.require_scope(scope)
        if self.grant is not None and not accounts <= self.grant.accounts:
            outside = ", ".join(repr(a) for a in sorted(accounts - self.grant.accounts)[:5])
            raise Forbidden(f"this token may not {what} {outside}")

    def require_any_account(self, scope: str, accounts: set[str], what: str) -> None:
        """The scope, and at least one of `accounts` among the token's (a transaction it took part in)."""
        self.require_scope(scope)
        if self.grant is not None and not accounts & self.grant.accounts:
            raise Forbidden(f"this token may not {what}")


ADMIN = Principal(None)


class Keyring:
    """The admin token's digest and every live grant, by id: what a worker checks a bearer token against."""

    def __init__(self, admin_token: str) -> None:
        if len(admin_token) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(f"the admin token must be at least {MIN_ADMIN_TOKEN_LENGTH} characters")
        self._admin_sha256 = digest(admin_token)
        self._grants: dict[str, Grant] = {}

    def put(self, grant: Grant) -> None:
        self._grants[grant.id] = grant

    def revoke(self, token_id: str) -> None:
        self._grants.pop(token_id, None)

    def get(self, token_id: str) -> Grant | None:
        return self._grants.get(token_id)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `Authorization: Bearer <token>` header, or Unauthorized."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("send `Authorization: Bearer <token>`")
        token = token.strip()
        if hmac.compare_digest(digest(token), self._admin_sha256):
            return ADMIN
        token_id, _, secret = token.removeprefix(TOKEN_PREFIX).partition(".")
        grant = self._grants.get(token_id) if token.startswith(TOKEN_PREFIX) else None
        if grant is None or not hmac.compare_digest(digest(secret), grant.secret_sha256):
            raise Unauthorized("the bearer token is not valid (unknown, revoked or mistyped)")
        return Principal(grant)
