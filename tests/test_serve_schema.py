"""The published OpenAPI schema checked with schemathesis against a live server: generated
requests to every operation never get a 5xx, and every response conforms to the schema
(status codes, content types, bodies, headers); schema-invalid requests are rejected. SQLite
and PostgreSQL catalogs.

Left out: schemathesis's check that every schema-valid request is accepted. A time in
``since``, a ``meta`` filter, a ``cursor`` or ``columns`` of the item at hand are text
whose validity no JSON schema states; such requests get a 400 naming what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from phasekit.catalog import open_catalog
from phasekit.catalog.tokens import create_token
from phasekit.serve import create_app
from serve_util import LiveServer, fill

pytest_plugins = ["conftest_pg"]

AUTH: dict[str, str] = {}
EXAMPLES = 12  # per operation


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api_schema(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.BaseSchema]:
    results = tmp_path_factory.mktemp("schema")
    if request.param == "sqlite":
        catalog = open_catalog(results, results_dir=results)
    else:
        pg = request.getfixturevalue("pg_server")
        name, url = pg.new_schema()
        request.addfinalizer(lambda: pg.drop_schema(name))
        catalog = open_catalog(url, results_dir=results)
    fill(catalog)
    token, _ = create_token(catalog, "admin")
    AUTH["Authorization"] = f"Bearer {token}"
    with LiveServer(create_app(catalog)) as server:
        yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    catalog.close()


def test_operations_conform(api_schema: schemathesis.BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 14
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=dict(AUTH), excluded_checks=[positive_data_acceptance])

        check()
