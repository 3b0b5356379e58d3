"""The local stack serves the OpenAPI document and an offline API reference (SPEC section 11)."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import ROOT, LocalStackInfo

pytestmark = pytest.mark.e2e


def test_openapi_json_is_the_committed_document(local_stack: LocalStackInfo) -> None:
    r = local_stack.api("GET", "/_local/openapi.json")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("application/json")
    assert r.body == (ROOT / "docs" / "openapi.json").read_bytes()
    assert r.json()["openapi"] == "3.1.0"


def test_docs_page_loads_its_assets_from_the_stack_only(local_stack: LocalStackInfo) -> None:
    r = local_stack.api("GET", "/_local/docs")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/html")
    references = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert references, r.text
    assert not [ref for ref in references if "//" in ref], "the page must not load anything from elsewhere"
    assert 'url: "openapi.json"' in r.text
    for ref in references:
        asset = local_stack.api("GET", f"/_local/{ref}")
        assert asset.status == 200, (ref, asset)
        assert len(asset.body) > 1000, ref
    script = local_stack.api("GET", "/_local/docs/assets/swagger-ui-bundle.js")
    assert "javascript" in script.headers["content-type"]
    assert b"SwaggerUIBundle" in script.body


def test_unknown_assets_and_other_methods_are_not_found(local_stack: LocalStackInfo) -> None:
    assert local_stack.api("GET", "/_local/docs/assets/../../pyproject.toml").status == 404
    assert local_stack.api("GET", "/_local/docs/assets/index.html").status == 404
    assert local_stack.api("POST", "/_local/openapi.json").status == 404
