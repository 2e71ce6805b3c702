"""Fuzzing against the contract: schemathesis generates requests for every operation in web/openapi.json and sends
them to two real workers; no answer may be a 5xx, and every answer must match the document (status, headers,
content type, body schema).

A schema-valid request may still get the documented 422: some rules are beyond what a schema says (a transfer's
payer and payee must differ)."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from devtools.cluster import bearer
from tests.integration.cluster import ADMIN_TOKEN, AppCluster

pytestmark = pytest.mark.broker

CONFIG = schemathesis.Config.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]}}}
)
SCHEMA = schemathesis.openapi.from_path(Path(__file__).parents[2] / "web" / "openapi.json", config=CONFIG)


@SCHEMA.auth()
class AdminToken:
    """The admin's bearer token on every generated request (schemathesis leaves it out where it tests auth)."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return ADMIN_TOKEN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), **bearer(data)}


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case, module_cluster: AppCluster) -> None:
    worker = module_cluster.workers[len(case.path) % 2]
    case.call_and_validate(base_url=worker.url)
