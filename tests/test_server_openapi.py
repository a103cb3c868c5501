"""schemathesis against the OpenAPI spec the server serves: no 5xx, and every response matches the spec."""

from __future__ import annotations

import base64
import os

import pytest
import schemathesis
from schemathesis.generation import GenerationMode
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.checks import not_a_server_error

from upsignal.config import ServerSettings
from upsignal.server import ServerOptions, create_app
from upsignal.server.keys import create_key
from upsignal.server.testing import serve_in_thread
from upsignal.store import Store

ADMIN_TOKEN = "schemathesis-admin-token"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("openapi") / "openapi.duckdb"
    with Store(db) as store:
        _, key = create_key(store, "schemathesis")
    os.environ["UPSIGNAL_SCHEMATHESIS_TOKEN"] = ADMIN_TOKEN
    settings_ = ServerSettings(scoring_interval_seconds=0.5, admin_token_env="UPSIGNAL_SCHEMATHESIS_TOKEN")
    try:
        with serve_in_thread(create_app(ServerOptions(db=db, settings=settings_))) as running:
            yield running.url, key
    finally:
        del os.environ["UPSIGNAL_SCHEMATHESIS_TOKEN"]


# NOTE: schemathesis.pytest.from_fixture fails under pytest 9.2 (it reads the removed
# Function._nodeid), so each operation's Hypothesis strategy is driven directly.
OPERATIONS = ["/v1/track", "/v1/identify", "/v1/group", "/v1/alias", "/v1/page", "/v1/screen", "/v1/batch",
              "/api/accounts", "/api/accounts/{account_id}"]


# /healthz takes no input, so it has no negative cases.
@pytest.mark.parametrize(
    ("path", "mode"),
    [(path, mode) for path in OPERATIONS for mode in GenerationMode] + [("/healthz", GenerationMode.POSITIVE)],
)
def test_api_conforms_to_spec(served, path, mode):
    url, key = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    method = "POST" if path.startswith("/v1/") else "GET"
    operation = schema[path][method]
    if path.startswith("/v1/"):
        headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    else:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    @given(case=operation.as_strategy(mode))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    check()


def test_spec_lists_every_operation(served):
    url, _ = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = {(result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()}
    assert {("POST", f"/v1/{name}") for name in ("track", "identify", "group", "alias", "page", "screen", "batch")} <= operations
    assert ("GET", "/api/accounts") in operations
    assert ("GET", "/api/accounts/{account_id}") in operations
