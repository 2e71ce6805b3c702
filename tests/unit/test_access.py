"""Bearer tokens and grants: who may do what, checked without a broker."""

from __future__ import annotations

import pytest

from payments_app.domain.access import (
    READ,
    TRANSFER,
    Forbidden,
    Grant,
    Keyring,
    Unauthorized,
    digest,
    mint,
    parse_grant_request,
)
from payments_app.domain.money import InvalidInput

ADMIN_TOKEN = "a" * 40


def keyring_with(scopes: set[str], accounts: set[str]) -> tuple[Keyring, Grant, str]:
    keyring = Keyring(ADMIN_TOKEN)
    grant, token = mint(frozenset(scopes), frozenset(accounts))
    keyring.put(grant)
    return keyring, grant, token


def test_the_admin_token_is_the_admin() -> None:
    assert Keyring(ADMIN_TOKEN).authenticate(f"Bearer {ADMIN_TOKEN}").is_admin
    assert Keyring(ADMIN_TOKEN).authenticate(f"bearer  {ADMIN_TOKEN} ").is_admin


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", f"Basic {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}x", "Bearer pt_x.y"]
)
def test_a_missing_or_wrong_token_is_unauthorized(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        Keyring(ADMIN_TOKEN).authenticate(header)


def test_a_short_admin_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Keyring("short")


def test_a_minted_token_carries_its_grant_and_only_its_digest_is_kept() -> None:
    keyring, grant, token = keyring_with({READ}, {"alice"})
    secret = token.partition(".")[2]
    assert token.startswith(f"pt_{grant.id}.")
    assert grant.secret_sha256 == digest(secret) and secret not in str(grant.to_dict())
    assert Grant.from_dict(grant.to_dict()) == grant
    caller = keyring.authenticate(f"Bearer {token}")
    assert not caller.is_admin and caller.grant == grant


def test_a_wrong_secret_or_a_revoked_token_is_unauthorized() -> None:
    keyring, grant, token = keyring_with({READ}, {"alice"})
    with pytest.raises(Unauthorized):
        keyring.authenticate(f"Bearer {token[:-1]}{'A' if token[-1] != 'A' else 'B'}")
    keyring.revoke(grant.id)
    with pytest.raises(Unauthorized):
        keyring.authenticate(f"Bearer {token}")


def test_a_token_reads_and_pays_only_from_its_accounts() -> None:
    keyring, _, token = keyring_with({READ, TRANSFER}, {"alice", "bob"})
    caller = keyring.authenticate(f"Bearer {token}")
    caller.require_accounts(TRANSFER, {"alice", "bob"}, "pay from")
    caller.require_any_account(READ, {"alice", "carol"}, "read")
    with pytest.raises(Forbidden, match="'carol'"):
        caller.require_accounts(TRANSFER, {"alice", "carol"}, "pay from")
    with pytest.raises(Forbidden):
        caller.require_any_account(READ, {"carol", "dave"}, "read")
    with pytest.raises(Forbidden, match="only the admin"):
        caller.require_admin()


def test_a_scope_is_needed_as_well_as_the_account() -> None:
    keyring, _, token = keyring_with({READ}, {"alice"})
    caller = keyring.authenticate(f"Bearer {token}")
    with pytest.raises(Forbidden, match="`transfer` scope"):
        caller.require_accounts(TRANSFER, {"alice"}, "pay from")


@pytest.mark.parametrize(
    ("body", "malformed"),
    [
        ([], True),
        ({"scopes": "read", "accounts": ["a"]}, True),
        ({"scopes": ["read"], "accounts": ["a"], "admin": True}, True),
        ({"scopes": [], "accounts": ["a"]}, False),
        ({"scopes": ["write"], "accounts": ["a"]}, False),
        ({"scopes": ["read"], "accounts": []}, False),
        ({"scopes": ["read"], "accounts": ["no spaces"]}, False),
    ],
)
def test_a_bad_grant_request_says_what_is_wrong(body: object, malformed: bool) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_grant_request(body)
    assert raised.value.malformed is malformed


def test_a_grant_request_is_read_as_sets() -> None:
    assert parse_grant_request({"scopes": ["read", "read"], "accounts": ["a", "b"]}) == (
        frozenset({READ}),
        frozenset({"a", "b"}),
    )
