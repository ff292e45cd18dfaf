"""Property-based requests from the service's own OpenAPI document (schemathesis): no input is a server error."""

from __future__ import annotations

import pytest
from _serve_helpers import Server, build_gallery
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the test extra")
from schemathesis.checks import not_a_server_error  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(synth_data, tiny_artifacts, tmp_path_factory):
    base = tmp_path_factory.mktemp("schema")
    build_gallery(synth_data, tiny_artifacts, base / "index")
    srv = Server(base / "index", tiny_artifacts, base / "server.log").start()
    yield schemathesis.openapi.from_url(srv.url + "/openapi.json")
    srv.stop()


def test_no_request_is_a_server_error(api_schema):
    """Up to 30 generated requests per operation (bounded: the schema has a dozen); every answer must be < 500."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case):
            case.call_and_validate(checks=[not_a_server_error], timeout=60)

        no_server_error()
