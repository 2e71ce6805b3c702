"""The OpenAPI document in the repo describes exactly the public routes the app serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from payments_app.domain.ledger import REJECTION_REASONS
from payments_app.domain.money import ID_MAX_LENGTH, InvalidInput, require_id
from payments_app.worker import app
from web.auth import OPEN_ROUTES

SPEC = json.loads((Path(__file__).parents[2] / "web" / "openapi.json").read_text())


def test_every_public_route_is_documented_and_nothing_else() -> None:
    routes = {
        resource.canonical
        for resource in app.web.web_app.router.resources()
        if not resource.canonical.startswith("/internal/")
    }
    assert routes == set(SPEC["paths"])


def test_documented_id_pattern_matches_the_domain_rule() -> None:
    pattern = SPEC["components"]["schemas"]["NewAccount"]["properties"]["id"]["pattern"]
    assert re.fullmatch(pattern.strip("^$"), "a" * ID_MAX_LENGTH)
    assert not re.fullmatch(pattern.strip("^$"), "a" * (ID_MAX_LENGTH + 1))
    for bad in ("x y", "x/y", ""):
        with pytest.raises(InvalidInput):
            require_id(bad, "id")
        assert not re.fullmatch(pattern.strip("^$"), bad)


def test_documented_rejection_reasons_are_the_domain_ones() -> None:
    documented = set(SPEC["components"]["schemas"]["Transaction"]["properties"]["reason"]["enum"]) - {None}
    assert documented == set(REJECTION_REASONS)


def test_documented_open_routes_are_the_ones_the_middleware_lets_through() -> None:
    open_routes = {path for path, ops in SPEC["paths"].items() if all(op.get("security") == [] for op in ops.values())}
    assert open_routes == OPEN_ROUTES
    for path, ops in SPEC["paths"].items():
        for op in ops.values():
            assert (path in OPEN_ROUTES) == ("401" not in op["responses"]), path


def test_the_document_is_a_valid_openapi_document() -> None:
    validate(SPEC)
