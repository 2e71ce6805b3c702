"""Fuzzing against the contract: schemathesis generates requests for every operation in web/openapi.json and sends
them to two real workers; no answer may be a 5xx, and every answer must match the document (status, headers,
content type, body schema).

A schema-valid request may still get the documented 422: some rules are beyond what a schema says (a transfer's
payer and payee must differ)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from payments_app.cluster import bearer
from tests.integration.cluster import ADMIN_TOKEN, AppCluster, running_cluster

pytestmark = pytest.mark.broker

CONFIG = schemathesis.Config.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409", "422", "429"]}}}
)
SCHEMA = schemathesis.openapi.from_path(Path(__file__).parents[2] / "web" / "openapi.json", config=CONFIG)


@pytest.fixture(scope="module")
def contract_cluster(broker_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppCluster]:
    with running_cluster(broker_url, tmp_path_factory.mktemp("contract")) as cluster:
        yield cluster


@SCHEMA.auth()
class AdminToken:
    """The admin's bearer token on every generated request (schemathesis leaves it out where it tests auth)."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return ADMIN_TOKEN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), **bearer(data)}


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case, contract_cluster: AppCluster) -> None:
    worker = contract_cluster.workers[len(case.path) % 2]
    case.call_and_validate(base_url=worker.url)
