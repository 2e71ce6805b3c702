"""The OpenAPI document in the repo describes exactly the public routes the app serves."""

from __future__ import annotations

import json
from pathlib import Path

from payments_app.worker import app

SPEC = json.loads((Path(__file__).parents[2] / "web" / "openapi.json").read_text())


def test_every_public_route_is_documented_and_nothing_else() -> None:
    routes = {
        resource.canonical
        for resource in app.web.web_app.router.resources()
        if not resource.canonical.startswith("/internal/")
    }
    assert routes == set(SPEC["paths"])


def test_documented_id_pattern_matches_the_domain_rule() -> None:
    assert SPEC["components"]["schemas"]["NewAccount"]["properties"]["id"]["pattern"] == "^[A-Za-z0-9_.:-]{1,64}$"
