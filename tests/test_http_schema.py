"""schemathesis against the OpenAPI document: no 500s, no status code the document does not list.

The API runs for real (uvicorn on loopback, SQLite, the running RabbitMQ on
a prefix of its own) in a thread of its own, since schemathesis drives it
from synchronous tests.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from ceptoar.api import create_app
from ceptoar.config import Settings

schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_no_undocumented_status(
    case: schemathesis.Case[Any], live_api: tuple[str, dict[str, str]]
) -> None:
    url, auth = live_api
    headers = auth if "Authorization" not in (case.headers or {}) else None
    case.call_and_validate(
        base_url=url, headers=headers, checks=[not_a_server_error, status_code_conformance]
    )
