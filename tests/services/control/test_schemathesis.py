"""The control plane against its own OpenAPI schema (schemathesis, in process, fake backends).

With a valid token no generated request gets a 5xx and every response matches the schema;
without one, every mutating endpoint refuses with 401.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from services.control import Settings, create_app
from services.control.clients import Clients

from .conftest import TOKEN
from .fakes import fake_clients

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
BOUNDED = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
"""Small and reproducible: each operation gets at most 25 generated requests."""
MUTATING = {"PUT", "POST", "PATCH", "DELETE"}


def _schema() -> OpenApiSchema:
    """The app on in-memory fakes, built at import: schemathesis parametrizes from it.

    (``schemathesis.pytest.from_fixture`` would build it per test, but it does not run
    under pytest 9.) The fakes keep their state across examples, like a real backend.
    """
    app = create_app(
        Settings(token=TOKEN, deadline_seconds=2.0), registry=CollectorRegistry(), clients=CLIENTS
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


CLIENTS: Clients = fake_clients()
schema = _schema()


@schema.parametrize()
@BOUNDED
def test_no_server_errors_and_responses_match_the_schema(case: Case[Any]) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)


@schema.include(method=list(MUTATING)).parametrize()
@BOUNDED
def test_mutating_endpoints_refuse_requests_without_a_token(case: Case[Any]) -> None:
    if case.method.upper() != case.operation.method.upper():
        return  # schemathesis also tries methods the path lacks (405, checked above)
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic x"}):
        if case.headers:
            case.headers.pop("Authorization", None)
        response = case.call(headers=headers)
        assert response.status_code in (401, 403), (
            f"{case.method} {case.formatted_path} without a valid token: "
            f"{response.status_code} {response.text[:200]}"
        )
