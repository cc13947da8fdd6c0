"""The exported OpenAPI document matches the code, documents errors, and the docs page works offline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any
from urllib.parse import urljoin, urlparse

from flask.testing import FlaskClient

from admin_service.__main__ import OPENAPI_PATH, generated_openapi
from tests.support import ROOT

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
ERROR_ENVELOPE = "#/components/schemas/ErrorEnvelope"


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op) for path, item in document["paths"].items() for method, op in item.items() if method in HTTP_METHODS
    ]


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_export_check_passes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "admin_service", "openapi", "export", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "up to date" in proc.stdout


def test_committed_document_equals_the_generated_one() -> None:
    committed = json.loads(OPENAPI_PATH.read_text())

    # Through JSON so tuples and lists compare alike; any other difference is drift.
    assert json.loads(json.dumps(generated_openapi())) == committed


def test_every_operation_documents_401_and_errors_use_the_envelope() -> None:
    document = generated_openapi()
    ops = operations(document)
    assert {path for path, _, _ in ops} >= {
        "/admin/jobs/stats",
        "/admin/jobs",
        "/admin/jobs/{job_ref}",
        "/admin/jobs/{job_ref}/results",
    }

    for path, method, op in ops:
        responses = op["responses"]
        assert "401" in responses, f"{method.upper()} {path} does not document 401"
        errors = {code: r for code, r in responses.items() if code == "default" or code.startswith(("4", "5"))}
        assert errors, f"{method.upper()} {path} documents no errors"
        for code, response in errors.items():
            content = resolve(document, response).get("content", {})
            assert "application/json" in content, f"{method.upper()} {path} {code}: no JSON body"
            schema = content["application/json"]["schema"]
            assert schema == {"$ref": ERROR_ENVELOPE}, f"{method.upper()} {path} {code}: {schema}"


def test_error_envelope_schema_has_the_contract_shape() -> None:
    schemas = generated_openapi()["components"]["schemas"]
    envelope = schemas["ErrorEnvelope"]

    assert set(envelope["required"]) == {"success", "error", "timestamp"}
    body = resolve({"components": {"schemas": schemas}}, envelope["properties"]["error"])
    assert set(body["required"]) == {"code", "message", "details"}


def test_docs_page_loads_every_asset_from_this_service(client: FlaskClient) -> None:
    page = client.get("/admin/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)

    assets = re.findall(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", html)
    spec_urls = re.findall(r"""\bdata-spec-url=["']([^"']+)["']""", html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets), assets
    assert spec_urls, "the page names no OpenAPI document"

    for url in assets + spec_urls:
        absolute = urlparse(urljoin("http://localhost/admin/docs", url))
        assert absolute.netloc == "localhost", f"{url} is not served by this service"
        response = client.get(absolute.path)
        assert response.status_code == 200, url
        assert response.data, url
    spec = client.get(urlparse(urljoin("http://localhost/admin/docs", spec_urls[0])).path).get_json()
    assert spec["info"]["title"] == "admin-service"
